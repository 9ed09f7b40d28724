"""Ray Data jobs that compose the PKS stages."""
