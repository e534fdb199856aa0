"""Reports: papermill-rendered notebooks (``reports/*.ipynb``) as self-contained HTML.

:mod:`.render` executes the templates; :mod:`.tables` and :mod:`.figures` hold everything the notebooks
show, so the notebooks themselves only call library functions on saved artifacts. Every string a report
prints passes through :func:`.tables.styled` or :func:`.tables.esc` (HTML-escaped).
"""

from .render import (
    TEMPLATES,
    RenderedReport,
    ReportTarget,
    execute_notebook,
    render_report,
    render_reports,
    report_targets,
)

__all__ = ["TEMPLATES", "RenderedReport", "ReportTarget", "execute_notebook", "render_report", "render_reports",
           "report_targets"]
