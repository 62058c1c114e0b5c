FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY workflows ./workflows
COPY activities ./activities
COPY tollway ./tollway
RUN pip install --no-cache-dir . && useradd --system tollway
USER tollway
ENV TOLLWAY_ENV=production
CMD ["tollway", "api", "--host", "0.0.0.0", "--port", "8000"]
