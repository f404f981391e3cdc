"""The command-line interface: thin click commands over the engine, lab and artefact APIs."""
