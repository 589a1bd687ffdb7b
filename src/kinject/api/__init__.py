"""kinject's HTTP API (FastAPI): ``create_app`` builds it around a KinjectService."""
