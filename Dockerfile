FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY infra infra
COPY illclient illclient
COPY delivery delivery
COPY settlement settlement
COPY broker broker
COPY web web
COPY sim sim
COPY app app
COPY bench bench
COPY docs/demo docs/demo
COPY run.py .
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
EXPOSE 8080 2121
CMD ["sh", "-c", "python run.py migrate && python run.py topology && exec python run.py hub"]
