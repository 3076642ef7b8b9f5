"""The app's logic without the UI (no gradio here), one module per job.

* :mod:`.models`: the configured detectors, loaded once (``ModelRegistry``, ``LoadFailure``).
* :mod:`.analysis`: one file -> typed verdicts (``score_images``, through
  :func:`fakeface.modeling.photo.score_photos`: a verdict per face, the photo's from its most
  suspicious face) and the full analysis (``analyze_bytes``).
* :mod:`.verdicts`: verdict-only requests batched into shared model calls (``VerdictBatcher``).
* :mod:`.batch`: many files -> rows (a photo row, then a row per face with its box) and CSV.
* :mod:`.generate`: in-app generation and the rate limit protecting the Space's key.
* :mod:`.browse`: the dataset browser and its sample evaluation.
* :mod:`.release`: what a release says about itself (the About tab).
* :mod:`.provenance`: C2PA, EXIF and PNG metadata.
* :mod:`.errors`: ``AppError`` and ``RateLimitExceeded``, errors as data.
"""
