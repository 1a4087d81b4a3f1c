"""What the engine does to a target over plain HTTP: health and error-rate probes, the app's
maintenance flag, and the error mapping every vendor API client shares."""
