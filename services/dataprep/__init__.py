"""Data prep service: sources, versioned datasets, tokenizers, feedback accumulation."""
