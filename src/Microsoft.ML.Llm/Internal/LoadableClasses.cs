// Every loadable class of Microsoft.ML.Llm, registered in one place (see Microsoft.ML.Llm.Data/Internal/LoadableClasses.cs).
using Microsoft.ML.Llm;

[assembly: LoadableClass(typeof(CausalLmTransformer), typeof(ComponentLoader<CausalLmTransformer>), null, typeof(SignatureLoadModel),
    "Causal LM transformer", CausalLmTransformer.LoaderSignature)]

[assembly: LoadableClass(typeof(TextGenerationTransformer), typeof(ComponentLoader<TextGenerationTransformer>), null, typeof(SignatureLoadModel),
    "Text generation transformer", TextGenerationTransformer.LoaderSignature)]
