"""The seed's `Infer` handler, as the team wrote it, with one change: the team's internal
`art_deployer.load` is replaced by `torch.jit.load` of a tiny local TorchScript model (the
deployer is not available outside their platform). Everything else is the seed's code."""

import os

import torch
from transformers import BertTokenizer


# 模型的名称必须为 Infer
class Infer:
    def initialize(self, configDict):
        self.pathDict = configDict["modelNameToPath"]
        self.device = configDict["device"]
        self.modelType = configDict["model_type"]
        self.logger = configDict["logger"]
        model_dir = self.pathDict["standard_bert"]
        self.runner = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location=self.device)
        self.tokenizer = BertTokenizer.from_pretrained(model_dir)

    # 模型前处理接口, 负责bert模型的tokenize，生成input data
    def preprocess(self, reqDict, modelSpec):
        text = reqDict["input"]
        seq_len = 64
        data = self.tokenizer(text, max_length=seq_len, padding="max_length", truncation=True)
        preprocessed = {"input": data}
        return preprocessed

    # 模型推理接口, 根据 modelSpec 选择 initialize 初始化的模型进行推理
    def process(self, preprocessed, modelSpec):
        data = preprocessed["input"]
        input_ids_tensor = torch.IntTensor(data["input_ids"]).to(self.device)
        attention_mask_tensor = torch.IntTensor(data["attention_mask"]).to(self.device)
        token_type_ids_tensor = torch.IntTensor(data["token_type_ids"]).to(self.device)
        pytensor = self.runner(input_ids_tensor, attention_mask_tensor, token_type_ids_tensor)
        result = {"result": pytensor[1]}
        return result
