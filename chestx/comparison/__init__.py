"""Comparison report over finished runs: read run folders, bootstrap/DeLong, tables, figures, HTML."""
from chestx.comparison.build import ReportResult, build_report
from chestx.runs.discover import ReportError, Run, load_runs

__all__ = ["ReportError", "ReportResult", "Run", "build_report", "load_runs"]
