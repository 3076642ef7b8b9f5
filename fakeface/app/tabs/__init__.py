"""One module per tab of the Space: module-level callbacks (``fn(ctx, ...)``) and a ``build_*_tab``."""
