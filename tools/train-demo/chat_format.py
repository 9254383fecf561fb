"""Gemma 3 chat format: the Jinja template shipped in tokenizer_config.json and an equivalent
Python renderer used to build the chat part of the training data (check_tokenizer.mjs verifies
that @huggingface/jinja renders the template exactly like render_chat below)."""

BOS = "<bos>"
SOT = "<start_of_turn>"
EOT = "<end_of_turn>"

# Gemma-3-style chat template (text only). Behaviour, as in the Gemma 3 -it models:
#  * <bos> first;
#  * a leading system message is folded into the first user turn, followed by a blank line;
#  * roles must alternate user / assistant (assistant is written as "model");
#  * content is trimmed; every turn ends with "<end_of_turn>\n";
#  * add_generation_prompt appends "<start_of_turn>model\n".
CHAT_TEMPLATE = (
    "{{- bos_token -}}\n"
    "{%- if messages | length > 0 and messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set system_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set system_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set turns = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set system_prefix = '' -%}\n"
    "    {%- set turns = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in turns -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}\n"
    "    {%- endif -%}\n"
    "    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}\n"
    "    {{- '<start_of_turn>' + role + '\\n' + (system_prefix if loop.first else '') -}}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{- message['content'] | trim -}}\n"
    "    {%- else -%}\n"
    "        {%- for part in message['content'] -%}\n"
    "            {%- if part['type'] == 'text' -%}\n"
    "                {{- part['text'] | trim -}}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- endif -%}\n"
    "    {{- '<end_of_turn>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{- '<start_of_turn>model\\n' -}}\n"
    "{%- endif -%}\n"
)


def render_chat(messages, add_generation_prompt=False, bos=True):
    """Python twin of CHAT_TEMPLATE (string content only)."""
    out = [BOS] if bos else []
    prefix = ""
    turns = messages
    if messages and messages[0]["role"] == "system":
        prefix = messages[0]["content"] + "\n\n"
        turns = messages[1:]
    for i, m in enumerate(turns):
        if (m["role"] == "user") != (i % 2 == 0):
            raise ValueError("Conversation roles must alternate user/assistant/user/assistant/...")
        role = "model" if m["role"] == "assistant" else m["role"]
        out.append(SOT + role + "\n" + (prefix if i == 0 else "") + m["content"].strip() + EOT + "\n")
    if add_generation_prompt:
        out.append(SOT + "model\n")
    return "".join(out)
