"""One module per resource; each route calls the KinjectService facade only."""
