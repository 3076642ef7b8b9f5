"""Names and defaults shared across fakeface. Nothing here imports torch."""

# Class index i of every detector means LABEL_NAMES[i]; saved into config.json
# as `label_names` and read back from there by everything downstream.
LABEL_NAMES = ("real", "fake")
REAL, FAKE = 0, 1

# Input normalisation (on [0, 1] pixels). ImageNet's is the default; TensorFlow-Lite models
# (EfficientNet-Lite) were trained on (x - 127) / 128, i.e. mean = std = 0.5.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)

FIRST_CLASS_ARCHITECTURES = ("mobilenetv2_100", "resnet50")
DEFAULT_ARCHITECTURE = "mobilenetv2_100"

# Dataset schema (see fakeface.data.dataset).
ATTRIBUTE_COLUMNS = ("gender", "race", "glasses", "expression", "age")
SYNTHETIC_GENERATOR = "synthetic-upsampler"
SYNTHETIC_REAL_SOURCE = "synthetic-camera"

# OpenAI image models: anything not retired. Retired models are removed from
# the SDK's `ImageModel` list (see fakeface.generation.client.available_image_models).
RETIRED_IMAGE_MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1")
DEFAULT_IMAGE_MODEL = "gpt-image-2"

# Environment variables read by the app and scripts.
ENV_MODEL = "FAKEFACE_MODEL"          # one or more Hub ids / folders, comma separated
ENV_DATASET = "FAKEFACE_DATASET"      # Hub id or folder
ENV_OPENAI_KEY = "OPENAI_API_KEY"
ENV_OPENAI_BASE_URL = "OPENAI_BASE_URL"

# Untrusted images: refuse anything that would decode to more pixels than this
# (a 1024x1024 face is ~1 MP; generous for real photos, fatal for bombs).
MAX_IMAGE_PIXELS = 40_000_000
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
