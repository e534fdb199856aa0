"""Reports: papermill-rendered notebooks (``reports/*.ipynb``) as self-contained HTML.

:mod:`.render` executes the templates; :mod:`.tables` and :mod:`.figures` hold everything the notebooks
show, so the notebooks themselves only call library functions on saved artifacts.
"""

from .render import TEMPLATES, RenderedReport, execute_notebook, render_report, render_reports

__all__ = ["TEMPLATES", "RenderedReport", "execute_notebook", "render_report", "render_reports"]
