"""imagekit: scientific processors from processor.yaml to identical binaries in every data centre."""
