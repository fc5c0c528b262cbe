"""tilepass runtime: the binding to libtilepass, preprocessing, the pipeline and the CLI."""
