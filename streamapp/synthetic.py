"""Deterministic generator of synthetic Chinese grocery reviews labelled for SKU match.

Label 1: the review talks about the SKU it is attached to (by name, alias or attributes only that
product has). Label 0: the review only talks about delivery, service, price, the app... or about a
different product. Used to train and test the demo model; no real customer data is involved.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

DATA_TYPE = "COMMENT_LONG_TEXT"
CATEGORY_KEYS = (
    "categoryFirstName",
    "categorySecondName",
    "categoryThirdName",
    "categoryFourthName",
    "categoryFifthName",
)
POSITIVE_RATE = 0.6
MAX_REVIEW_CHARS = 700


@dataclass(frozen=True)
class Sku:
    """One catalogue entry: SKU name, category path (3-5 levels), aliases, own phrases."""

    name: str
    categories: tuple[str, ...]
    keywords: tuple[str, ...]
    phrases: tuple[str, ...]


# Two lines per SKU: `name|category path|keywords and aliases`, then its own phrases (good and bad).
_CATALOGUE_TEXT = """
山东烟台红富士苹果 5斤装|生鲜/水果/苹果/红富士|红富士,苹果,富士苹果
    脆甜多汁,果肉很脆,有点面,表皮有点皱,个个都很红
阿克苏冰糖心苹果 10斤礼盒装|生鲜/水果/苹果/冰糖心|冰糖心,苹果,阿克苏苹果
    糖心很明显,很甜很脆,有几个没有糖心,果皮有点糙
赣南脐橙 5kg装|生鲜/水果/柑橘/橙子/脐橙|脐橙,橙子,赣南橙
    汁水很多,酸甜适中,皮很好剥,有几个干巴巴的
海南香蕉 3斤|生鲜/水果/香蕉|香蕉,海南蕉
    熟得刚好,软糯香甜,有点青要放几天,皮上有黑斑
8424西瓜 1个 约8斤|生鲜/水果/瓜类/西瓜|西瓜,8424
    瓤红沙甜,皮很薄,切开有点生,籽很少
阳光玫瑰青提 500g|生鲜/水果/葡萄/青提/阳光玫瑰|阳光玫瑰,青提,葡萄
    有玫瑰香味,粒粒饱满,有几颗掉粒了,皮有点涩
丹东99草莓 2斤|生鲜/水果/莓果/草莓|草莓,丹东草莓
    个头均匀,奶香味很浓,压坏了好几个,有点酸
千禧小番茄 500g|生鲜/蔬菜/茄果类/番茄/圣女果|小番茄,圣女果,西红柿
    酸甜可口,皮有点厚,当零食吃正好,沙沙的
黄心土豆 2.5kg|生鲜/蔬菜/根茎类/土豆|土豆,马铃薯
    炒土豆丝很好吃,发芽了几个,炖着面面的,表皮很干净
山东章丘大葱 1kg|生鲜/蔬菜/葱姜蒜/大葱|大葱,章丘葱
    葱白很长,有点辣,叶子有点蔫,很粗
水果黄瓜 500g|生鲜/蔬菜/瓜类/黄瓜|黄瓜,青瓜
    很脆嫩,生吃很清爽,尾部有点苦,带着小刺很新鲜
澳洲谷饲西冷牛排 200g*5片|生鲜/肉禽蛋/牛羊肉/牛排/西冷|牛排,西冷,牛肉
    煎出来很嫩,肉质有嚼劲,筋有点多,解冻后出水多
黑猪五花肉 500g|生鲜/肉禽蛋/猪肉/五花肉|五花肉,黑猪肉,猪肉
    肥瘦相间,做红烧肉很香,没有腥味,皮上还有毛
冷鲜鸡胸肉 1kg|生鲜/肉禽蛋/禽肉/鸡胸肉|鸡胸肉,鸡胸,鸡肉
    健身餐首选,很嫩不柴,煮完有点柴,分割得很整齐
散养土鸡蛋 30枚|生鲜/肉禽蛋/蛋类/鸡蛋|鸡蛋,土鸡蛋
    蛋黄很黄,破了两个,蛋壳很干净,个头有点小
鲜活基围虾 500g|生鲜/海鲜水产/虾类/基围虾|基围虾,活虾
    到手还是活的,虾肉很弹,死了好几只,个头挺大
冷冻三文鱼切片 200g|生鲜/海鲜水产/鱼类/三文鱼|三文鱼,鱼片
    纹理很清晰,做刺身很新鲜,解冻后有腥味,油脂丰富
阳澄湖大闸蟹 4两*8只|生鲜/海鲜水产/蟹类/大闸蟹|大闸蟹,螃蟹
    蟹黄很满,个个都是活的,膏很肥,绑绳太多了
可口可乐 330ml*24罐|酒水饮料/饮料/碳酸饮料/可乐|可乐,可口可乐
    气很足,冰镇后很爽,罐子有凹陷,有点太甜
农夫山泉天然水 550ml*24瓶|酒水饮料/饮用水/矿泉水|农夫山泉,矿泉水,天然水
    喝着有点甜,喝着放心,瓶身有点软,瓶盖很好拧
青岛啤酒经典 500ml*12罐|酒水饮料/酒类/啤酒|啤酒,青岛啤酒,青啤
    麦香很浓,口感清爽,泡沫细腻,有点苦
53度飞天茅台 500ml|酒水饮料/酒类/白酒/酱香型|茅台,白酒,飞天
    酱香突出,回味悠长,防伪码能查到,入口柔和
东方树叶乌龙茶 500ml*15瓶|酒水饮料/饮料/茶饮料/乌龙茶|乌龙茶,东方树叶,茶饮料
    无糖很解腻,茶味有点淡,喝着很清香,回甘明显
维他奶原味豆奶 250ml*24盒|酒水饮料/饮料/植物蛋白饮料/豆奶|豆奶,维他奶
    豆香浓郁,甜度刚好,配早餐很方便,盒子有点瘪
乐事原味薯片 135g|休闲食品/膨化食品/薯片|薯片,乐事
    很脆,有点咸,碎渣很多,一袋一半是空气
三只松鼠每日坚果 750g/30袋|休闲食品/坚果炒货/混合坚果|每日坚果,坚果,三只松鼠
    独立小包装,果仁饱满,有几颗哈喇味,种类很丰富
德芙丝滑牛奶巧克力 252g|休闲食品/糖果巧克力/巧克力|巧克力,德芙
    入口即化,到手有点化了,很丝滑,甜而不腻
卫龙大面筋辣条 106g*5|休闲食品/肉干零食/辣条|辣条,卫龙
    麻辣够味,小时候的味道,太辣了,油有点多
旺旺雪饼 520g|休闲食品/饼干糕点/米饼|雪饼,旺旺,米饼
    甜甜的很酥脆,有几包受潮了,孩子很爱吃,糖霜很多
原味开心果 500g|休闲食品/坚果炒货/开心果|开心果
    开口率很高,颗粒很大,有点咸,空壳有点多
光明鲜牛奶 950ml|乳品烘焙/低温奶/鲜牛奶|鲜牛奶,鲜奶,光明牛奶
    奶味很浓,保质期短要尽快喝,喝着很香醇,煮开有奶皮
安慕希原味酸奶 205g*12盒|乳品烘焙/常温奶/酸奶|酸奶,安慕希
    很浓稠,酸甜适中,有点太甜,口感顺滑
特仑苏纯牛奶 250ml*16盒|乳品烘焙/常温奶/纯牛奶|特仑苏,纯牛奶
    奶香很足,口感醇厚,有几盒胀包,日期很新
桃李醇熟切片面包 400g|乳品烘焙/面包/吐司|面包,吐司,切片面包
    很松软,烤一下更香,边有点干,做三明治正好
安佳淡味黄油 227g|乳品烘焙/奶油黄油/黄油|黄油,安佳
    奶香浓郁,烘焙很好用,运输中化了,煎牛排很香
妙可蓝多奶酪棒 500g|乳品烘焙/奶酪/奶酪棒|奶酪棒,奶酪,妙可蓝多
    孩子爱吃,奶味很重,有点甜,独立包装方便
维达超韧抽纸 3层130抽*24包|个护清洁/纸品/抽纸|抽纸,纸巾,维达
    很柔软,有韧性不易破,擦完会掉屑,抽起来很顺
心相印卷纸 4层*27卷|个护清洁/纸品/卷纸|卷纸,卫生纸,心相印
    很厚实,很软很舒服,一卷用不了几天,有股味道
蓝月亮深层洁净洗衣液 3kg|个护清洁/衣物清洁/洗衣液|洗衣液,蓝月亮
    香味很淡雅,去渍效果好,泡沫多不好漂,不伤手
汰渍洗衣凝珠 52颗|个护清洁/衣物清洁/洗衣凝珠|洗衣凝珠,凝珠,汰渍
    用量很方便,溶解很快,衣服上有残留,留香很久
海飞丝去屑洗发水 400ml|个护清洁/洗发护发/洗发水|洗发水,海飞丝
    去屑效果明显,洗完头发很顺滑,洗完有点干,味道好闻
高露洁亮白牙膏 120g*3支|个护清洁/口腔护理/牙膏|牙膏,高露洁
    很清凉,刷完牙齿白了点,薄荷味有点冲,泡沫细腻
五常稻花香大米 5kg|粮油调味/米面杂粮/大米|大米,五常大米,稻花香
    米香很浓,煮出来很软糯,碎米有点多,颗粒饱满
金龙鱼玉米油 1.8L|粮油调味/食用油/玉米油|玉米油,食用油,金龙鱼
    炒菜不起烟,油很清亮,油烟很少,瓶口漏油了
鲁花5S压榨花生油 5L|粮油调味/食用油/花生油|花生油,鲁花
    花生味很香,炒菜很香,颜色金黄,桶有点变形
海天金标生抽 1.28L|粮油调味/调味品/酱油/生抽|生抽,酱油,海天
    鲜味很足,颜色很正,有点咸,凉拌很好用
山西老陈醋 500ml*2瓶|粮油调味/调味品/醋/陈醋|陈醋,老陈醋,山西醋
    酸味醇厚,蘸饺子很香,有点冲,瓶子包得很严实
金沙河鸡蛋挂面 1kg|粮油调味/米面杂粮/面条/挂面|挂面,面条,金沙河
    煮不烂,很筋道,断条有点多,汤不浑
"""


def _parse_catalogue(text: str) -> tuple[Sku, ...]:
    lines = text.strip().splitlines()
    skus = []
    for head, phrases in zip(lines[::2], lines[1::2], strict=True):
        name, path, keywords = head.split("|")
        skus.append(
            Sku(
                name,
                tuple(path.split("/")),
                tuple(keywords.split(",")),
                tuple(phrases.strip().split(",")),
            )
        )
    return tuple(skus)


CATALOGUE: tuple[Sku, ...] = _parse_catalogue(_CATALOGUE_TEXT)

OPENERS = (
    "第一次在这里买", "回购好几次了", "朋友推荐买的", "给家里老人买的", "活动价入手的",
    "一直在这个平台买", "看评价不错就下单了", "囤了一些", "帮同事带的", "给孩子买的",
    "这次买的", "双十一囤的货", "公司团购的",
)
DELIVERY = (
    "物流很快", "半小时就送到了", "下单第二天就到了", "配送员态度很好", "快递小哥冒雨送来的",
    "送货上门很及时", "配送有点慢等了两天", "骑手送错了地址", "冷链配送还是冰的",
    "放在快递柜没打电话", "预约时间准时送达", "快递员直接扔门口了",
)
SERVICE = (
    "客服回复很及时", "客服处理问题很耐心", "退款流程很顺利", "售后态度很差",
    "找客服半天没人理", "发票开得很快", "少发了一件补发很快", "申请售后很麻烦",
)
PACKAGING = (
    "包装很结实", "包装有点破损", "外箱压扁了", "包装很用心还放了冰袋", "包装很简陋",
    "里外包了好几层", "包装盒有点脏",
)
PRICE = (
    "价格实惠", "性价比很高", "比超市便宜", "就是价格有点贵", "会员日活动力度挺大",
    "平台的优惠券很好用", "凑单满减很划算", "刚买完就降价了不保价", "比上次贵了几块钱",
)
APP = (
    "app下单有点卡", "页面很清楚", "支付很方便", "积分可以抵现", "app老是闪退",
    "下单流程很简单", "地址改不了很麻烦",
)
# Quality remarks that name nothing: they appear in both classes so they carry no signal.
VAGUE = (
    "质量不错", "和图片一样", "和描述一致", "挺好的", "一般般", "还行吧", "保质期很新",
    "日期很新鲜", "分量很足", "很新鲜", "不太新鲜", "味道正宗", "有点失望", "超出预期",
)
GENERIC_TOPICS = (DELIVERY, SERVICE, PACKAGING, PRICE, APP, VAGUE)
THEMES = (
    "这次主要是想说一下配送的问题", "说说售后的事", "主要评价一下服务", "就说说物流吧",
)
CLOSERS = (
    "好评", "五星好评", "会继续回购", "值得信赖", "推荐大家购买", "有待改进", "希望保持",
    "总体满意", "下次不会再买了", "会推荐给朋友", "还会再来",
)
ENDINGS = ("！", "。", "~", "👍👍👍", "!!", "", "。。", "😊")

# {k}: a product keyword, {p}: one of its phrases, {v}: a vague remark.
OWN_MENTIONS = (
    "{k}{p}", "这次买的{k}{p}", "{k}收到了，{p}", "买的{k}{p}", "{k}{v}", "这个{k}{p}",
    "家里人都说{k}{p}", "{k}比上次买的好", "{k}{p}，{v}", "收到的{k}{p}", "{k}真的{p}",
)
OTHER_MENTIONS = (
    "顺便买的{k}{p}", "上次买的{k}{p}", "{k}{p}", "同时买的{k}{v}", "凑单的{k}{p}",
    "另外{k}{p}", "{k}{v}",
)


def _related(a: Sku, b: Sku) -> bool:
    """True when the two SKUs are too close to count as 'another product' for each other."""
    if a.categories[:3] == b.categories[:3]:
        return True
    a_words = (a.name, *a.keywords)
    return any(kb in wa or wa in kb for kb in (b.name, *b.keywords) for wa in a_words)


# For each SKU, the catalogue entries a negative review may talk about instead.
_OTHERS: dict[str, tuple[Sku, ...]] = {
    sku.name: tuple(s for s in CATALOGUE if not _related(s, sku)) for sku in CATALOGUE
}


def _mention(rng: random.Random, sku: Sku, templates: tuple[str, ...]) -> str:
    return rng.choice(templates).format(
        k=rng.choice(sku.keywords), p=rng.choice(sku.phrases), v=rng.choice(VAGUE)
    )


def _generic_clause(rng: random.Random) -> str:
    return rng.choice(rng.choice(GENERIC_TOPICS))


def _clause_count(rng: random.Random) -> int:
    # Mostly short reviews with a long tail, like real ones.
    return min(2 + int(rng.expovariate(1 / 3.5)), 24)


def _review(rng: random.Random, sku: Sku, label: int) -> str:
    clauses = [_generic_clause(rng) for _ in range(_clause_count(rng))]
    other = _mention(rng, rng.choice(_OTHERS[sku.name]), OTHER_MENTIONS)
    if label == 1:
        # The own mention sits near the start so it survives truncation to a few dozen tokens.
        clauses.insert(rng.randint(0, min(2, len(clauses))), _mention(rng, sku, OWN_MENTIONS))
        if rng.random() < 0.25:  # product-only attributes, without naming it
            clauses.insert(rng.randint(1, len(clauses)), rng.choice(sku.phrases))
        if rng.random() < 0.15:  # a comparison with another product does not flip the label
            clauses.insert(rng.randint(1, len(clauses)), other)
    elif rng.random() < 0.75:
        # Most negatives name some product, so naming one is no shortcut to label 1.
        clauses.insert(rng.randint(0, min(2, len(clauses))), other)
    elif rng.random() < 0.3:
        clauses.insert(0, rng.choice(THEMES))
    if rng.random() < 0.7:
        clauses.insert(0, rng.choice(OPENERS))
    if rng.random() < 0.8:
        clauses.append(rng.choice(CLOSERS))
    text = "，".join(clauses) + rng.choice(ENDINGS)
    if rng.random() < 0.08:  # some users paste the same text several times
        text *= rng.randint(2, 4)
    return text[:MAX_REVIEW_CHARS]


def generate_comments(count: int, seed: int = 0) -> Iterator[dict[str, object]]:
    """Yield `count` labelled review records; the same seed always yields the same records."""
    rng = random.Random(seed)
    for _ in range(count):
        sku = rng.choice(CATALOGUE)
        label = int(rng.random() < POSITIVE_RATE)
        record: dict[str, object] = {"dataType": DATA_TYPE, "baseSkuName": sku.name}
        record["reviewBody"] = _review(rng, sku, label)
        levels = sku.categories + ("",) * (len(CATEGORY_KEYS) - len(sku.categories))
        record.update(zip(CATEGORY_KEYS, levels, strict=True))
        record["label"] = label
        yield record
