# Flex Template launcher image for beam-gbif (build: `make template`; see README "Flex Template").
# The launcher runs pipelines/gbif_media.py with the template's parameters as flags; Beam stages
# setup.py so Dataflow workers install the same package.
ARG LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base:latest
FROM ${LAUNCHER_IMAGE}

# Must satisfy setup.py's apache-beam pin (tests/test_templates.py checks it).
ARG BEAM_VERSION=2.77.0

ENV TEMPLATE_DIR=/template
WORKDIR ${TEMPLATE_DIR}

COPY setup.py pyproject.toml ./
COPY beam_gbif/ beam_gbif/
COPY pipelines/ pipelines/

RUN pip install --no-cache-dir "apache-beam[gcp]==${BEAM_VERSION}" .

ENV FLEX_TEMPLATE_PYTHON_PY_FILE="${TEMPLATE_DIR}/pipelines/gbif_media.py" \
    FLEX_TEMPLATE_PYTHON_SETUP_FILE="${TEMPLATE_DIR}/setup.py"
