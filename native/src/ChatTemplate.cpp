#include "ChatTemplate.h"

#include "chat.h"
#include "json-schema-to-grammar.h"

// Parses `src` alone first: common_chat_templates_init logs a parse error and rethrows it sliced to a bare
// std::exception, and the caller should read what is wrong with its template.
static void CheckTemplateParses(const std::string & src, const char * whose) {
    try {
        common_chat_template check(src, "", "");
    } catch (const std::exception & e) {
        throw ChatInputError("chat_template", std::string(whose) + " does not parse: " + e.what());
    }
}

ChatTemplates::Owned ChatTemplates::templates(const std::string & override_template) {
    if (!override_template.empty()) {
        CheckTemplateParses(override_template, "the chat template");
    } else if (!own) {
        const char * src = llama_model_chat_template(model, nullptr);
        if (src != nullptr) {
            CheckTemplateParses(src, "the model's chat template");
        }
    }
    try {
        if (!override_template.empty()) {
            return Owned(common_chat_templates_init(model, override_template).release(), common_chat_templates_free);
        }
        if (!own) {
            own = Owned(common_chat_templates_init(model, "").release(), common_chat_templates_free);
        }
    } catch (const std::exception & e) {
        throw ChatInputError("chat_template", std::string(override_template.empty() ? "the model's chat template" : "the chat template") + " does not parse: " + e.what());
    }
    // Without a template of its own llama.cpp falls back to ChatML, which would be a guess about the model's format.
    if (!common_chat_templates_was_explicit(own.get())) {
        throw ChatInputError("messages", "the model has no chat template (tokenizer.chat_template); send chat_template, or a raw prompt");
    }
    return own;
}

std::string ChatTemplates::render(const std::vector<ChatMessage> & messages, const std::string & override_template,
                                  const std::map<std::string, std::string> & kwargs_json) {
    const Owned tmpls = templates(override_template);
    common_chat_templates_inputs inputs;
    inputs.use_jinja = true;
    inputs.add_generation_prompt = true;
    for (const auto & m : messages) {
        common_chat_msg msg;
        msg.role = m.role;
        msg.content = m.content;
        inputs.messages.push_back(std::move(msg));
    }
    inputs.chat_template_kwargs = kwargs_json;
    // llama-server reads the thinking switch from the kwargs the same way
    auto thinking = kwargs_json.find("enable_thinking");
    if (thinking != kwargs_json.end()) {
        inputs.enable_thinking = thinking->second == "true";
    }
    try {
        return common_chat_templates_apply(tmpls.get(), inputs).prompt;
    } catch (const std::exception & e) {
        throw ChatInputError("chat_template", std::string("the chat template failed to render the messages: ") + e.what());
    }
}

std::string JsonSchemaToGrammar(const std::string & schema) {
    common_json parsed;
    try {
        parsed = common_json::parse(schema);
    } catch (const std::exception & e) {
        throw ChatInputError("json_schema", std::string("not valid JSON: ") + e.what());
    }
    try {
        return json_schema_to_grammar(parsed, /* force_gbnf */ true);
    } catch (const std::exception & e) {
        throw ChatInputError("json_schema", std::string("not a schema llama.cpp can turn into a grammar: ") + e.what());
    }
}
