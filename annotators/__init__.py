"""What labels a clip: shot detectors, signal analysers, captioners, the audit app."""
