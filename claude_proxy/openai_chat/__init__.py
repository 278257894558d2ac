"""
The OpenAI Chat Completions API (`POST /v1/chat/completions`): `parse` turns
its requests into the neutral request, `encode` the answer into
`chat.completion` bodies and `chat.completion.chunk` streams.
"""
