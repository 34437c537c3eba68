"""Monitoring: reference profiles, drift (PSI, KS), and health checks of model outputs."""

from recsys.monitoring.drift import DriftReport, DriftThresholds, FeatureDrift, check_drift, psi
from recsys.monitoring.health import HealthAlert, check_frame, check_version
from recsys.monitoring.profile import Profile, build_profile, load_profile, save_profile

__all__ = ["DriftReport", "DriftThresholds", "FeatureDrift", "HealthAlert", "Profile", "build_profile",
           "check_drift", "check_frame", "check_version", "load_profile", "psi", "save_profile"]
