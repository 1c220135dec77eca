# One image for the scheduler and the workers; the command picks the role.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY nightscan nightscan
COPY scheduler scheduler
COPY workers workers
COPY db db
COPY models models
COPY synth synth
COPY screening screening
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["nightscan"]
