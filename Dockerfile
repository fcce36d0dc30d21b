FROM python:3.11-slim
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY contracts contracts
COPY db db
COPY workers workers
COPY cli cli
COPY api api
RUN uv sync --frozen --no-dev
ENTRYPOINT ["uv", "run", "--no-sync", "fleet"]
CMD ["--help"]
