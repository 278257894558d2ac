"""
The OpenAI Responses API (`/v1/responses`): its requests into the neutral
request, the answer into `response` objects and their event stream, and the
stored responses that `previous_response_id`, GET and DELETE use.
"""
