"""The book's own tools, not a paper's method: building, executing, running and timing the chapters, and
keeping their arithmetic comparable across machines. The Makefile calls ``python -m booktools <command>``;
``tests/`` imports and tests every module.

- :mod:`booktools.toc`        the table of contents, parameters and glued values of notebooks
- :mod:`booktools.arith`      arithmetic pins for every numeric library, and the determinism fingerprint
- :mod:`booktools.limits`     per-cell and per-notebook time limits
- :mod:`booktools.notebooks`  ``make execute`` and ``make run``, progress-bar collapsing, the smoke check
- :mod:`booktools.modes`      nbval's strict or portable comparison, decided by the fingerprint
- :mod:`booktools.build`      the Jupyter Book build
- :mod:`booktools.timings`    the summary table of ``make test``
"""
