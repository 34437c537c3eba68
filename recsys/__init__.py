"""recsys: a hybrid batch + online recommender for a food-delivery marketplace."""

__version__ = "0.1.0"


def _disable_feast_import_time_typechecks() -> None:
    """Make typeguard's ``@typechecked`` a no-op before Feast is imported.

    Feast decorates hundreds of functions with typeguard, which re-parses and re-compiles each
    module at import: importing feast takes ~22 s on this 2-core machine with it and ~6 s
    without. typeguard documents the decorator as a no-op under ``python -O``; this is the same
    effect without stripping asserts. It changes no behaviour of valid calls, only the runtime
    type assertions inside Feast's own functions.
    """
    try:
        import typeguard
    except ImportError:  # pragma: no cover - typeguard comes with feast
        return

    def typechecked(target=None, **_options):
        return target if target is not None else (lambda t: t)

    typeguard.typechecked = typechecked


_disable_feast_import_time_typechecks()
