"""The command lines: one module per console script (see pyproject's [project.scripts]).

Each parses its flags and calls the capability subpackages, so this package sits
on top of all of them; ``train.py``, ``app.py`` and ``scripts/*.py`` only call
these ``main`` functions.
"""
