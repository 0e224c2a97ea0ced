FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY gateway ./gateway
COPY worker ./worker
COPY inboxlog ./inboxlog
RUN pip install --no-cache-dir . && useradd --system --home /app inboxlog
USER inboxlog
ENTRYPOINT ["inboxlog"]
