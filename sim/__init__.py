"""Simulated libraries, suppliers and readers: real AMQP, FTP, HTTP and SMTP clients,
for the demo and the chaos harness."""
