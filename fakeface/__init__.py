"""fakeface: tell real faces from AI-generated ones.

Subpackages by capability; imports go one way, left to right:
utils -> data -> faces -> modeling -> evaluation -> training / generation / scan
-> serving -> app -> cli. README.md's "Project layout" has a line per module.
"""
__version__ = "0.1.0"
