"""
The Anthropic Messages API (`/v1/messages`, `/v1/messages/count_tokens`): its
requests into the neutral request, the answer into `message` objects and
Anthropic's event stream, token estimates, and its model list.
"""
