"""Reports: papermill-rendered notebooks (``reports/*.ipynb``) as self-contained HTML.

:mod:`.render` executes the templates; :mod:`.analysis` computes what they show once per render;
:mod:`.context`, :mod:`.tables` and :mod:`.figures` hold everything the notebooks show, so the notebooks
themselves only call library functions on saved artifacts. Every string a report prints passes through
:func:`.styles.styled` or :func:`.escape.esc` (HTML-escaped).

Nothing is imported here: papermill, nbformat and nbconvert are needed only to render (import
:mod:`.render` for that), so the CLI and the table helpers work where they are not installed.
"""
