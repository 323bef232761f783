"""How CORAL is started: local Ray, Ray wiring of the engine, job submission, cluster and Modal definitions."""
