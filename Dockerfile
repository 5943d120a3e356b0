FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broker broker
COPY settlement settlement
COPY delivery delivery
COPY schemas schemas
COPY run.py .
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
EXPOSE 8080 2121
CMD ["sh", "-c", "python run.py migrate && python run.py topology && exec python run.py hub"]
