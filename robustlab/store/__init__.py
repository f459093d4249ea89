"""Results store: every evaluation in one SQLite file, and the leaderboard built from it."""

from robustlab.store.db import DEFAULT_STORE, STORE_ENV, ResultsStore, StoreError, default_store_path
from robustlab.store.record import RunInfo, protocol_label, protocol_matches, run_info

__all__ = ["DEFAULT_STORE", "STORE_ENV", "ResultsStore", "RunInfo", "StoreError", "default_store_path",
           "protocol_label", "protocol_matches", "run_info"]
