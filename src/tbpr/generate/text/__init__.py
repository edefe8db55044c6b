"""Text generation: MLLM captions of images, LLM rewrites and back translations of captions, the Text
Faithfulness Filter and its evaluation, and the prompts and instruction templates they use."""
