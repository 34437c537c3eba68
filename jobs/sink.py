"""The event-log sink job: land served lists and feedback as the Parquet impressions log.

``python -m jobs.sink [--data-dir DIR] [--config FILE] [--flush]``: reads
``<data_dir>/<serving.event_log_dir>/worker-*``, writes closed days to
``<data_dir>/<serving.sink_dir>/date=YYYY-MM-DD/part-0.parquet`` and the feature samples to
``<data_dir>/<serving.feature_samples_dir>/date=YYYY-MM-DD/part-0.parquet`` (see
recsys/serving/sink.py for the lateness window and idempotency), prints the report as JSON. Run it on a schedule (e.g.
hourly); ``--flush`` lands the open days too (end of a test or a closed-loop run).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path

from recsys.config import Config, load_config
from recsys.errors import RecsysError
from recsys.serving.settings import resolve_dir, serving_config
from recsys.serving.sink import SinkReport, run_sink


def sink_job(config: Config, *, flush: bool = False) -> SinkReport:
    settings = serving_config(config)
    return run_sink(
        resolve_dir(config.data_dir, settings.event_log_dir),
        resolve_dir(config.data_dir, settings.sink_dir),
        resolve_dir(config.data_dir, settings.sink_state),
        lateness=timedelta(minutes=settings.lateness_minutes), id_type=settings.sink_id_type, flush=flush,
        samples_dir=resolve_dir(config.data_dir, settings.feature_samples_dir),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.sink", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--flush", action="store_true", help="land open days too")
    args = parser.parse_args(argv)
    try:
        report = sink_job(load_config(args.config, data_dir=args.data_dir), flush=args.flush)
    except RecsysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(report.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
