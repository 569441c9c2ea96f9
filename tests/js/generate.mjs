// Greedy generation with transformers.js on a visiontune ONNX export: node generate.mjs FOLDER IMAGE MESSAGES_JSON
// MAX_NEW_TOKENS prints the prompt ids, the new tokens, the reply and the last prompt position's logits as JSON.
import { env, AutoProcessor, AutoModelForImageTextToText, RawImage } from '@huggingface/transformers';
import path from 'node:path';

const [folder, imagePath, messagesJson, maxNew] = process.argv.slice(2);
env.allowRemoteModels = false;
env.localModelPath = path.dirname(path.resolve(folder)) + '/';
const name = path.basename(path.resolve(folder));
const processor = await AutoProcessor.from_pretrained(name);
const model = await AutoModelForImageTextToText.from_pretrained(name, { dtype: 'fp32' });
const image = await RawImage.read(imagePath);
const messages = JSON.parse(messagesJson);  // the task's chat messages, as visiontune builds them
const text = processor.apply_chat_template(messages, { add_generation_prompt: true });
// LLaVA's processor takes the images first, Idefics3's the text first
const inputs = processor.constructor.name === 'LlavaProcessor'
    ? await processor([image], text) : await processor(text, [image]);
const { logits } = await model(inputs);
const last = Array.from(logits.slice(0, -1).data);
const out = await model.generate({ ...inputs, max_new_tokens: Number(maxNew), do_sample: false });
const promptLength = inputs.input_ids.dims.at(-1);
const tokens = Array.from(out.slice(null, [promptLength, null]).tolist()[0], Number);
console.log(JSON.stringify({ text, prompt_ids: Array.from(inputs.input_ids.tolist()[0], Number), tokens, last_logits: last,
                             text_out: processor.batch_decode(out.slice(null, [promptLength, null]), { skip_special_tokens: true })[0] }));
