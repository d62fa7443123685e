# beam-gbif conveniences. `make template` builds and publishes the Flex Template:
#   make template PROJECT=my-project REGION=europe-west1 BUCKET=my-bucket
# (Artifact Registry repository REPO must exist: gcloud artifacts repositories create $(REPO) \
#   --repository-format=docker --location=$(REGION))

PYTHON   ?= python3
PROJECT  ?= $(shell gcloud config get-value project 2>/dev/null)
REGION   ?= europe-west1
BUCKET   ?= $(PROJECT)-beam-gbif
REPO     ?= beam-gbif
TAG      ?= $(shell $(PYTHON) -c "import beam_gbif; print(beam_gbif.__version__)")
IMAGE    ?= $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPO)/gbif-media:$(TAG)
TEMPLATE ?= gs://$(BUCKET)/templates/gbif_media.json
METADATA := pipelines/templates/gbif_media_metadata.json

.PHONY: help lint test test-fast image template template-print run-template

help:
	@echo "make lint | test | test-fast | image | template | template-print | run-template OUTPUT=gs://... QUERY='{...}'"

lint:
	ruff check .
	hadolint Dockerfile

test:
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

# Builds the launcher image with Cloud Build (Docker is not needed locally).
image:
	gcloud builds submit --project "$(PROJECT)" --region "$(REGION)" --tag "$(IMAGE)" .

# Builds the image, then writes the template spec (image + metadata) to $(TEMPLATE).
template: image
	gcloud dataflow flex-template build "$(TEMPLATE)" \
	  --project "$(PROJECT)" \
	  --image "$(IMAGE)" \
	  --sdk-language PYTHON \
	  --metadata-file "$(METADATA)"

# Validates the metadata offline and prints the spec instead of uploading it.
template-print:
	gcloud dataflow flex-template build "$(TEMPLATE)" \
	  --image "$(IMAGE)" --sdk-language PYTHON --metadata-file "$(METADATA)" --print-only

run-template:
	gcloud dataflow flex-template run "gbif-media-$$(date +%Y%m%d-%H%M%S)" \
	  --project "$(PROJECT)" --region "$(REGION)" \
	  --template-file-gcs-location "$(TEMPLATE)" \
	  --parameters '^~^output=$(OUTPUT)~query=$(QUERY)~label=speciesKey~random_subsets=train=0.9,test=0.1'
# (^~^ makes "~" gcloud's list separator: the JSON query and the ratios contain commas.)
