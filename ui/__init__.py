"""The Streamlit chat app and the HTTP server."""
