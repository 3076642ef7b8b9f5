"""fakeface: tell real faces from AI-generated ones.

Modules, by capability (imports go downwards only):
    constants      label names, defaults, environment variable names
    images         safe decoding of untrusted image bytes
    preprocess     the one preprocessing definition, read from the model's config
    model          create / save / load / publish a timm detector
    inference      crops -> logits -> calibrated probability -> verdict
    synthetic      offline procedural real/fake image source
    dataset        build, split, card, push and load the face dataset
    prompts        the attribute grid and portrait prompt builder
    generation     OpenAI image generation (prompted faces and look-alikes)
    training       the accelerate training loop
    evaluation     metrics, calibration, thresholds, robustness
    explain        Grad-CAM
    provenance     C2PA, EXIF and PNG text metadata
    fastpath       int8 ONNX export and the fast serving path
    serving        the app's predictor (models loaded once)
    ui             the Gradio Blocks
"""
__version__ = "0.1.0"
