// Every loadable class of Microsoft.ML.Llm.Data, registered in one place: ML.NET's component catalog finds the loader
// of a model zip entry by its loader signature (the LoaderSignature constant of each transformer, never renamed:
// zips written by earlier versions name it). ComponentLoader<T> (ModelPersistence.cs) checks the header and calls
// the component's Load.
using Microsoft.ML.Llm.Data;

[assembly: LoadableClass(typeof(PiiRedactorTransformer), typeof(ComponentLoader<PiiRedactorTransformer>), null, typeof(SignatureLoadModel),
    "PII redactor for language-model corpora", PiiRedactorTransformer.LoaderSignature)]
[assembly: LoadableClass(typeof(TextNormalizerTransformer), typeof(ComponentLoader<TextNormalizerTransformer>), null, typeof(SignatureLoadModel),
    "Text normalizer for language models", TextNormalizerTransformer.LoaderSignature)]
[assembly: LoadableClass(typeof(LanguageDetectorTransformer), typeof(ComponentLoader<LanguageDetectorTransformer>), null, typeof(SignatureLoadModel),
    "Language detector", LanguageDetectorTransformer.LoaderSignature)]
[assembly: LoadableClass(typeof(LanguageFilterTransformer), typeof(ComponentLoader<LanguageFilterTransformer>), null, typeof(SignatureLoadModel),
    "Language filter", LanguageFilterTransformer.LoaderSignature)]
[assembly: LoadableClass(typeof(TextQualityFilterTransformer), typeof(ComponentLoader<TextQualityFilterTransformer>), null, typeof(SignatureLoadModel),
    "Text quality filter", TextQualityFilterTransformer.LoaderSignature)]
[assembly: LoadableClass(typeof(NearDuplicateRemoverTransformer), typeof(ComponentLoader<NearDuplicateRemoverTransformer>), null, typeof(SignatureLoadModel),
    "Near-duplicate remover", NearDuplicateRemoverTransformer.LoaderSignature)]
[assembly: LoadableClass(typeof(LmTokenizerTransformer), typeof(ComponentLoader<LmTokenizerTransformer>), null, typeof(SignatureLoadModel),
    "LM tokenizing transformer", LmTokenizerTransformer.LoaderSignature)]
[assembly: LoadableClass(typeof(TokenPackerTransformer), typeof(ComponentLoader<TokenPackerTransformer>), null, typeof(SignatureLoadModel),
    "Token packing transformer", TokenPackerTransformer.LoaderSignature)]
[assembly: LoadableClass(typeof(ChatTokenizerTransformer), typeof(ComponentLoader<ChatTokenizerTransformer>), null, typeof(SignatureLoadModel),
    "Chat tokenizer for instruction tuning", ChatTokenizerTransformer.LoaderSignature)]
