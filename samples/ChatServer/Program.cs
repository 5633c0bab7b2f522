// An OpenAI-compatible server for a model zip:
//   dotnet run -c Release --project samples/ChatServer -- --model out/model.zip --urls http://127.0.0.1:5000
// then POST /v1/chat/completions, POST /v1/completions (JSON, or "stream": true for server-sent events), GET /v1/models.
// Options: --model-id, --template default|chatml|path/to/tokenizer_config.json, --max-tokens, --max-prompt-tokens,
// --max-body-bytes, --timeout-seconds (README "Serving").
using Microsoft.ML.Llm.Samples.ChatServer;

ChatServerApp.Build(args).Run();
