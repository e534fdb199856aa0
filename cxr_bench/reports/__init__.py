"""Reports: papermill-rendered notebooks (``reports/*.ipynb``) as self-contained HTML.

:mod:`.render` executes the templates; :mod:`.tables` and :mod:`.figures` hold everything the notebooks
show, so the notebooks themselves only call library functions on saved artifacts. Nothing is imported
here: papermill, nbformat and nbconvert are needed only to render, so importing a table helper (or the CLI)
must work without them.
"""
