"""Self-contained HTML reports of run folders (``robustlab report``)."""

from robustlab.report.run_report import build_run_report, find_runs, read_run, write_all_reports, write_run_report

__all__ = ["build_run_report", "find_runs", "read_run", "write_all_reports", "write_run_report"]
