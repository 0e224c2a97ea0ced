FROM python:3.11-slim
WORKDIR /app
# Dependencies first, from the lock (exact versions, checked hashes): a layer that only a change
# of the lock rebuilds. Then the project itself, resolving nothing new.
COPY requirements.lock ./
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY gateway ./gateway
COPY worker ./worker
COPY inboxlog ./inboxlog
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && pip check \
    && useradd --system --home /app inboxlog
USER inboxlog
ENTRYPOINT ["inboxlog"]
