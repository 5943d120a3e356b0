"""FTP drop, document store, download links and e-mail."""
