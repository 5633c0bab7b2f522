// An OpenAI-compatible server for a model zip:
//   dotnet run -c Release --project samples/ChatServer -- --model out/model.zip --urls http://127.0.0.1:5000
// then POST /v1/chat/completions, POST /v1/completions (JSON, or "stream": true for server-sent events), GET /v1/models.
// Options: --model-id, --template default|chatml|path/to/tokenizer_config.json, --max-tokens, --max-prompt-tokens,
// --max-body-bytes, --timeout-seconds (README "Serving").
using System.Runtime.InteropServices;
using Microsoft.ML.Llm.Samples.ChatServer;

// Before libtorch loads: its OpenMP workers (libgomp) then sleep as soon as a parallel region ends, instead of spinning on
// the other cores while the decoding loop's own kernels want them. With two torch threads, GPT-2 124M's 8-prompt batch
// went from 125 to 218-224 tokens/s, one prompt from 42 to 50 (benchmarks/README.md, "OpenMP workers that wait
// passively"). A value the user set is kept (overwrite 0); Linux only (glibc and musl both have setenv).
if (OperatingSystem.IsLinux())
    _ = SetEnvironment("OMP_WAIT_POLICY", "PASSIVE", 0);

ChatServerApp.Build(args).Run();

[DllImport("libc", EntryPoint = "setenv", ExactSpelling = true)]
static extern int SetEnvironment(string name, string value, int overwrite);
