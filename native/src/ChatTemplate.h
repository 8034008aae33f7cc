// Chat templates and JSON-schema grammars through llama.cpp's common library (libllama-common): the Jinja engine
// and the schema converter llama-server uses, so a model's own template renders as it does there.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

struct llama_model;
struct common_chat_templates;  // common/chat.h, kept out of this header: it brings the whole Jinja engine

struct ChatMessage {
    std::string role;
    std::string content;
};

// A request's mistake, with the request field it is about ("messages", "chat_template", "json_schema").
struct ChatInputError : std::invalid_argument {
    ChatInputError(std::string field, const std::string & what) : std::invalid_argument(what), field(std::move(field)) {}
    std::string field;
};

// The templates of one model: its own (parsed once, on first use) or a request's override.
class ChatTemplates {
  public:
    explicit ChatTemplates(const llama_model * model) : model(model) {}

    // `messages` rendered for generation (ending with the assistant's turn). Throws ChatInputError: "messages" when
    // the model has no template and there is no override, "chat_template" when a template fails to parse or render.
    std::string render(const std::vector<ChatMessage> & messages, const std::string & override_template,
                       const std::map<std::string, std::string> & kwargs_json);

  private:
    using Owned = std::shared_ptr<common_chat_templates>;
    Owned templates(const std::string & override_template);

    const llama_model * model;
    Owned own;
};

// The GBNF grammar accepting exactly the JSON documents `schema` (JSON Schema text) allows. Throws ChatInputError
// ("json_schema") with the parser's or converter's message.
std::string JsonSchemaToGrammar(const std::string & schema);
