"""`make sam-local`: SAM CLI runs the built arm64 artifact in a Lambda container against the sandbox, judged by state.

Modules: run (the order of things), steps (what each step sends and how it is judged), host (Debian packages, the
Docker daemon, arm64 emulation), standin (the Lambda base image when AWS's cannot be pulled), host_network (SAM CLI
with a working `--docker-network host`; runs in SAM CLI's own venv, so it imports nothing from here).
"""
