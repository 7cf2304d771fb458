"""Deterministic generator of synthetic Chinese grocery reviews labelled for SKU match.

Label 1: the review talks about the SKU it is attached to (by its product word, an alias, a
hypernym such as 牛肉 for a steak, or its brand / origin). Label 0: the review only talks about
delivery, service, price, the app... or about a different product. Negative reviews are written
exactly like positive ones, only about another product, so nothing in a review alone tells the
label: only the pair (review, SKU name) does. SKU names are composed per record from a product,
a brand or origin and a pack size, so a model sees thousands of names and cannot memorise them.
Used to train and test the demo model; no real customer data is involved.
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
class Product:
    """One product type: category path (3-5 levels), SKU name forms, words reviewers use for it,
    brands or origins that may prefix its SKU names, and pack sizes."""

    categories: tuple[str, ...]
    names: tuple[str, ...]
    aliases: tuple[str, ...]
    prefixes: tuple[str, ...]
    specs: tuple[str, ...]


# One line per product: `category path|SKU name forms|aliases|prefixes (- for none)|pack sizes`.
_CATALOGUE_TEXT = """
生鲜/水果/苹果/红富士|红富士苹果,富士苹果|苹果,红富士,富士|山东烟台,洛川,栖霞|5斤装,10斤礼盒装,12个装
生鲜/水果/苹果/冰糖心|冰糖心苹果|苹果,冰糖心|新疆阿克苏,阿克苏|10斤礼盒装,5kg,3斤装
生鲜/水果/苹果/蛇果|蛇果|蛇果,苹果|美国进口,进口|6个装,1kg
生鲜/水果/柑橘/橙子/脐橙|脐橙|橙子,脐橙,橙|赣南,江西赣州,秭归|5kg装,5斤 中果,10斤礼盒
生鲜/水果/柑橘/橙子/冰糖橙|冰糖橙|橙子,冰糖橙,橙|云南,湖南麻阳|3斤装,5斤
生鲜/水果/柑橘/沃柑|沃柑|沃柑,柑子|广西武鸣,广西|5斤装,3kg
生鲜/水果/柑橘/砂糖橘|砂糖橘|砂糖橘,橘子,桔子|广西,广东|5斤装,3斤
生鲜/水果/柚子/红心柚|红心柚,蜜柚|柚子,蜜柚,柚|福建平和,平和|2个装,约5斤
生鲜/水果/香蕉|香蕉|香蕉,蕉|海南,进口菲律宾,云南|3斤,1把,5斤装
生鲜/水果/瓜类/西瓜|西瓜|西瓜,瓜|8424,麒麟,宁夏硒砂,海南|1个 约8斤,整个,半个
生鲜/水果/瓜类/哈密瓜|哈密瓜|哈密瓜,瓜|新疆,西州蜜|1个 约3斤,2个装
生鲜/水果/葡萄/阳光玫瑰|阳光玫瑰葡萄,阳光玫瑰|阳光玫瑰,葡萄,青提|云南,精品|500g,2串 约1kg
生鲜/水果/葡萄/巨峰|巨峰葡萄|葡萄,巨峰|辽宁,新鲜|500g,2斤
生鲜/水果/莓果/草莓|草莓|草莓|丹东99,奶油,红颜|2斤,500g 礼盒,300g
生鲜/水果/莓果/蓝莓|蓝莓|蓝莓|云南,智利进口|125g*4盒,500g
生鲜/水果/桃李/水蜜桃|水蜜桃|桃子,水蜜桃,桃|无锡阳山,奉化|6个装,2.5kg
生鲜/水果/热带水果/芒果|芒果|芒果|海南贵妃,攀枝花,台农|5斤装,3斤
生鲜/水果/热带水果/榴莲|榴莲|榴莲|泰国金枕,进口|1个 约3kg,冷冻果肉 300g
生鲜/水果/热带水果/火龙果|红心火龙果,火龙果|火龙果|海南,越南|4个装,5斤
生鲜/水果/猕猴桃|猕猴桃,奇异果|猕猴桃,奇异果|陕西周至,佳沛|12个装,3斤
生鲜/水果/梨/香梨|库尔勒香梨,香梨|梨,香梨|新疆|5斤装,2.5kg
生鲜/水果/樱桃/车厘子|车厘子|车厘子,樱桃|智利进口,JJ级|2斤礼盒,500g
生鲜/蔬菜/茄果类/番茄|番茄,西红柿|番茄,西红柿|普罗旺斯,沙瓤|500g,1kg,3斤
生鲜/蔬菜/茄果类/番茄/圣女果|小番茄,圣女果|小番茄,圣女果,番茄|千禧,海南|400g,500g
生鲜/蔬菜/茄果类/茄子|长茄子,茄子|茄子|新鲜|500g,1kg
生鲜/蔬菜/茄果类/辣椒|青椒,尖椒|青椒,辣椒,尖椒|新鲜,山东|500g
生鲜/蔬菜/根茎类/土豆|土豆,马铃薯|土豆,马铃薯|黄心,新,内蒙古|2.5kg,1kg,2斤
生鲜/蔬菜/根茎类/胡萝卜|胡萝卜|胡萝卜,萝卜|新鲜,山东|1kg,500g
生鲜/蔬菜/根茎类/红薯|红薯,蜜薯|红薯,地瓜,蜜薯|烟薯25号,六鳌|5斤装,2.5kg
生鲜/蔬菜/根茎类/山药|铁棍山药,山药|山药|河南焦作,温县|2斤,1kg
生鲜/蔬菜/葱姜蒜/大葱|大葱|大葱,葱|山东章丘,章丘|1kg,500g
生鲜/蔬菜/葱姜蒜/大蒜|大蒜,紫皮蒜|大蒜,蒜,蒜头|山东金乡|500g,1kg
生鲜/蔬菜/葱姜蒜/生姜|生姜,小黄姜|生姜,姜|云南罗平,山东|500g
生鲜/蔬菜/瓜果类/黄瓜|黄瓜|黄瓜,青瓜|水果,山东旱|500g,3根,1kg
生鲜/蔬菜/瓜果类/南瓜|贝贝南瓜,南瓜|南瓜,贝贝南瓜|板栗味,新鲜|5斤装,2个
生鲜/蔬菜/叶菜类/大白菜|大白菜,娃娃菜|白菜,娃娃菜,大白菜|新鲜,高山|1颗 约2kg,3颗装
生鲜/蔬菜/叶菜类/菠菜|菠菜|菠菜|新鲜,有机|500g,300g
生鲜/蔬菜/叶菜类/生菜|生菜,球生菜|生菜|新鲜,水培|500g,2颗
生鲜/蔬菜/菌菇类/香菇|香菇|香菇,蘑菇|新鲜,古田|300g,500g
生鲜/蔬菜/菌菇类/金针菇|金针菇|金针菇|新鲜|150g*3包,400g
生鲜/蔬菜/豆类/豆芽|黄豆芽,绿豆芽|豆芽|新鲜|500g
生鲜/蔬菜/甘蓝类/西兰花|西兰花,西蓝花|西兰花,西蓝花|新鲜,有机|500g,2颗
生鲜/肉禽蛋/牛羊肉/牛排/西冷|西冷牛排|牛排,西冷,牛肉|澳洲谷饲,澳洲,原切|200g*5片,200g*2,1kg
生鲜/肉禽蛋/牛羊肉/牛排/眼肉|眼肉牛排|牛排,眼肉,牛肉|原切,澳洲|250g,150g*4
生鲜/肉禽蛋/牛羊肉/牛腩|牛腩|牛腩,牛肉|新鲜,国产|500g,1kg
生鲜/肉禽蛋/牛羊肉/羊肉卷|羊肉卷,羊肉片|羊肉,羊肉卷,羊肉片|内蒙古,锡林郭勒|500g,250g*4
生鲜/肉禽蛋/牛羊肉/羊排|羊排|羊排,羊肉|内蒙古,草原|1kg,500g
生鲜/肉禽蛋/猪肉/五花肉|五花肉|五花肉,猪肉,五花|黑猪,土猪,冷鲜|500g,1kg
生鲜/肉禽蛋/猪肉/排骨|猪肋排,排骨|排骨,肋排,猪肉|冷鲜,黑猪|400g,500g,1kg
生鲜/肉禽蛋/猪肉/里脊|猪里脊,里脊肉|里脊,猪肉|冷鲜,黑猪|500g
生鲜/肉禽蛋/猪肉/猪蹄|猪蹄|猪蹄,猪脚|冷冻,新鲜|1kg,2只
生鲜/肉禽蛋/禽肉/鸡胸肉|鸡胸肉|鸡胸肉,鸡胸,鸡肉|冷鲜,健身|1kg,100g*10袋
生鲜/肉禽蛋/禽肉/鸡腿|鸡大腿,琵琶腿|鸡腿,鸡肉|冷鲜,新鲜|800g,1kg
生鲜/肉禽蛋/禽肉/鸡翅|鸡翅中,鸡中翅|鸡翅,翅中|冷冻,单冻|500g,1kg
生鲜/肉禽蛋/禽肉/整鸡|三黄鸡,土鸡|鸡,土鸡|散养,农家|1只 约1.2kg
生鲜/肉禽蛋/禽肉/鸭|老鸭,鸭腿|鸭,鸭肉|散养|1只,500g
生鲜/肉禽蛋/蛋类/鸡蛋|鸡蛋,土鸡蛋|鸡蛋,蛋,土鸡蛋|散养,无抗鲜,农家|30枚,15枚 盒装,10枚
生鲜/肉禽蛋/蛋类/鸭蛋|咸鸭蛋|鸭蛋,咸蛋|高邮,红心|20枚,6枚
生鲜/海鲜水产/虾类/基围虾|基围虾|虾,基围虾,活虾|鲜活,冷冻|500g,1kg
生鲜/海鲜水产/虾类/大虾|黑虎虾,白虾|大虾,虾|冷冻,厄瓜多尔|1kg,400g
生鲜/海鲜水产/虾类/小龙虾|小龙虾|小龙虾,龙虾|麻辣,十三香,鲜活|750g,4-6钱 2斤
生鲜/海鲜水产/鱼类/三文鱼|三文鱼|三文鱼,鱼|冷冻,挪威|切片 200g,500g
生鲜/海鲜水产/鱼类/鲈鱼|鲈鱼|鲈鱼,鱼|鲜活,冰鲜|1条 约500g
生鲜/海鲜水产/鱼类/带鱼|带鱼|带鱼,鱼|舟山,冷冻|500g,1kg
生鲜/海鲜水产/蟹类/大闸蟹|大闸蟹|大闸蟹,螃蟹,蟹|阳澄湖,太湖|4两*8只,公3.5两 母2.5两 8只
生鲜/海鲜水产/贝类/扇贝|扇贝|扇贝|獐子岛,鲜活|1kg,12只
生鲜/海鲜水产/贝类/花甲|花甲|花甲,蛤蜊|鲜活|500g,1kg
酒水饮料/饮料/碳酸饮料/可乐|可口可乐,百事可乐,无糖可乐,可乐|可乐,饮料|-|330ml*24罐,500ml*12瓶,2L
酒水饮料/饮料/碳酸饮料/雪碧|雪碧|雪碧,汽水,饮料|-|330ml*24罐,500ml*12瓶
酒水饮料/饮料/碳酸饮料/气泡水|苏打气泡水|气泡水,苏打水|元气森林,白桃味,无糖|480ml*15瓶
酒水饮料/饮料/茶饮料/乌龙茶|乌龙茶|乌龙茶,茶饮料,茶|东方树叶,三得利,无糖|500ml*15瓶
酒水饮料/饮料/茶饮料/冰红茶|冰红茶|冰红茶,红茶,茶饮料|康师傅,统一|500ml*15瓶
酒水饮料/饮料/果汁/橙汁|橙汁,100%橙汁|橙汁,果汁|美汁源,汇源,NFC|1L*6瓶,300ml*12瓶
酒水饮料/饮料/植物蛋白饮料/豆奶|豆奶|豆奶|维他奶,原味|250ml*24盒
酒水饮料/饮料/植物蛋白饮料/椰汁|椰汁,椰子水|椰汁,椰子水|椰树,海南|1L*12瓶,330ml*24罐
酒水饮料/饮料/功能饮料|红牛,功能饮料|红牛,功能饮料,饮料|-|250ml*24罐
酒水饮料/饮用水/矿泉水|天然矿泉水,矿泉水,天然水|矿泉水,水,天然水|农夫山泉,百岁山,恒大冰泉|550ml*24瓶,4L*4桶
酒水饮料/饮用水/纯净水|饮用纯净水,纯净水|纯净水,水|怡宝,娃哈哈|555ml*24瓶,4L*4桶
酒水饮料/咖啡/即饮咖啡|拿铁咖啡,即饮咖啡|咖啡,拿铁|雀巢,星巴克|268ml*15瓶
酒水饮料/咖啡/速溶咖啡|速溶咖啡,冻干咖啡|咖啡|雀巢,三顿半,隅田川|30条,24颗
酒水饮料/酒类/啤酒|啤酒,精酿啤酒|啤酒,精酿|青岛,雪花,百威|500ml*12罐,330ml*24罐
酒水饮料/酒类/白酒/酱香型|飞天茅台,酱香型白酒|白酒,茅台,酱香|53度|500ml
酒水饮料/酒类/白酒/浓香型|五粮液,浓香型白酒|白酒,五粮液|52度|500ml*2瓶
酒水饮料/酒类/葡萄酒|干红葡萄酒,红酒|红酒,葡萄酒,干红|法国进口,张裕,智利|750ml*6瓶,750ml
酒水饮料/茶叶/绿茶|西湖龙井,碧螺春,绿茶|绿茶,龙井,茶叶,茶|明前,特级|250g,100g礼盒
休闲食品/膨化食品/薯片|原味薯片,薯片|薯片|乐事,品客,黄瓜味,番茄味|104g,135g,70g*3
休闲食品/膨化食品/虾条|虾条,虾片|虾条,虾片|上好佳|40g*6
休闲食品/坚果炒货/混合坚果|每日坚果,混合坚果|坚果,每日坚果|三只松鼠,洽洽,百草味|750g/30袋,25g*30包
休闲食品/坚果炒货/腰果|腰果|腰果,坚果|盐焗,原味|500g,250g
休闲食品/坚果炒货/开心果|开心果|开心果,坚果|原味,盐焗|500g,250g*2
休闲食品/坚果炒货/瓜子|瓜子,葵花籽|瓜子|洽洽,焦糖味|308g*3,1kg
休闲食品/坚果炒货/巴旦木|巴旦木|巴旦木,坚果|奶香,新疆|500g
休闲食品/糖果巧克力/巧克力|牛奶巧克力,黑巧克力|巧克力|德芙,费列罗,瑞士莲|252g,16粒礼盒
休闲食品/糖果巧克力/糖果|软糖,水果糖|糖果,软糖,糖|大白兔,旺仔,阿尔卑斯|500g
休闲食品/肉干零食/辣条|辣条,大面筋|辣条,面筋|卫龙|106g*5,300g
休闲食品/肉干零食/牛肉干|牛肉干|牛肉干,肉干|内蒙古,风干|500g,250g
休闲食品/肉干零食/鸭脖|鸭脖,鸭锁骨|鸭脖,卤味|周黑鸭,绝味,麻辣|300g
休闲食品/饼干糕点/米饼|雪饼,米饼|雪饼,米饼,饼|旺旺|520g
休闲食品/饼干糕点/饼干|苏打饼干,曲奇饼干|饼干,曲奇|奥利奥,康师傅,丹麦|400g,908g礼盒
休闲食品/饼干糕点/蛋黄酥|蛋黄酥|蛋黄酥,糕点|手工,雪媚娘|6枚装
休闲食品/饼干糕点/月饼|月饼,广式月饼|月饼|五仁,莲蓉蛋黄,稻香村|礼盒 8个装
休闲食品/果干蜜饯/芒果干|芒果干|芒果干,果干|菲律宾,7D|500g,80g*5
休闲食品/方便速食/方便面|方便面,泡面|方便面,泡面,面|康师傅红烧牛肉面,统一老坛酸菜|5连包,12桶
休闲食品/方便速食/自热火锅|自热火锅,自热米饭|自热火锅,火锅|海底捞,莫小仙|3盒装
休闲食品/方便速食/螺蛳粉|螺蛳粉|螺蛳粉,粉|好欢螺,李子柒|400g*3袋
乳品烘焙/低温奶/鲜牛奶|鲜牛奶,鲜奶|鲜牛奶,牛奶,鲜奶,奶|光明,每日鲜语,三元|950ml,1L*2
乳品烘焙/常温奶/纯牛奶|纯牛奶,全脂纯牛奶|纯牛奶,牛奶,奶|特仑苏,蒙牛,伊利,金典|250ml*16盒,250ml*12盒
乳品烘焙/常温奶/酸奶|原味酸奶,酸奶|酸奶|安慕希,纯甄|205g*12盒
乳品烘焙/低温奶/低温酸奶|希腊酸奶,原味酸奶,老酸奶|酸奶|简爱,卡士,君乐宝|100g*8杯,135g*3
乳品烘焙/奶粉/成人奶粉|全脂奶粉,成人奶粉|奶粉|雀巢,伊利,安佳|800g,400g
乳品烘焙/面包/吐司|切片面包,全麦吐司|面包,吐司|桃李,曼可顿|400g,680g
乳品烘焙/面包/蛋糕|蛋糕,瑞士卷|蛋糕|好利来,早餐|6个装,500g
乳品烘焙/奶油黄油/黄油|淡味黄油,黄油|黄油|安佳,总统|227g,500g
乳品烘焙/奶酪/奶酪棒|奶酪棒,芝士棒|奶酪棒,奶酪,芝士|妙可蓝多,百吉福|500g,20支
乳品烘焙/冷冻甜品/冰淇淋|冰淇淋,雪糕|冰淇淋,雪糕|哈根达斯,钟薛高,梦龙|4支装,392g
个护清洁/纸品/抽纸|抽纸,原木抽纸,超韧抽纸|抽纸,纸巾,纸|维达,清风,洁柔|3层130抽*24包,3层100抽*24包
个护清洁/纸品/卷纸|卷纸,卫生纸|卷纸,卫生纸,纸|心相印,维达|4层*27卷,10卷
个护清洁/纸品/湿巾|湿巾,湿纸巾|湿巾,纸巾|心相印,婴儿|80抽*5包
个护清洁/衣物清洁/洗衣液|洗衣液,深层洁净洗衣液|洗衣液|蓝月亮,薰衣草,奥妙,立白|3kg,2kg*2瓶
个护清洁/衣物清洁/洗衣凝珠|洗衣凝珠,除菌洗衣凝珠|凝珠,洗衣凝珠|汰渍,碧浪|52颗,30颗
个护清洁/衣物清洁/洗衣粉|洗衣粉|洗衣粉|雕牌,立白|2.5kg
个护清洁/家庭清洁/洗洁精|洗洁精|洗洁精|白猫,立白,柠檬味|1.29kg*2瓶
个护清洁/家庭清洁/垃圾袋|垃圾袋|垃圾袋,袋子|加厚,抽绳|100只*3卷
个护清洁/洗发护发/洗发水|洗发水,去屑洗发水|洗发水|海飞丝,潘婷,清扬|400ml,750ml
个护清洁/身体护理/沐浴露|沐浴露|沐浴露|舒肤佳,六神|1L,720ml
个护清洁/口腔护理/牙膏|牙膏,亮白牙膏|牙膏|高露洁,云南白药,黑人|120g*3支
个护清洁/口腔护理/牙刷|牙刷,软毛牙刷|牙刷|高露洁,飞利浦|4支装
个护清洁/面部护理/洗面奶|洗面奶,氨基酸洗面奶|洗面奶|旁氏,芙丽芳丝|150ml
粮油调味/米面杂粮/大米|大米,稻花香大米,珍珠米|大米,米|五常,东北,泰国香米|5kg,10斤
粮油调味/米面杂粮/面粉|面粉,高筋面粉|面粉,面|金龙鱼,香雪|5kg,2.5kg
粮油调味/米面杂粮/面条/挂面|鸡蛋挂面,挂面|挂面,面条,面|金沙河,陈克明|1kg,500g*3
粮油调味/米面杂粮/杂粮|小米,黄小米|小米,杂粮|山西沁州,东北|2.5kg,1kg
粮油调味/米面杂粮/燕麦|燕麦片,即食燕麦|燕麦,麦片|桂格,西麦|1kg,1.5kg
粮油调味/食用油/玉米油|玉米油|玉米油,油,食用油|金龙鱼,福临门|1.8L,5L
粮油调味/食用油/花生油|花生油,压榨花生油|花生油,油|鲁花,5S压榨,压榨一级|5L,1.8L
粮油调味/食用油/橄榄油|特级初榨橄榄油,橄榄油|橄榄油,油|西班牙进口,欧丽薇兰|750ml,1L
粮油调味/调味品/酱油/生抽|生抽,酱油|生抽,酱油|海天金标,李锦记,千禾|1.28L,500ml
粮油调味/调味品/醋/陈醋|老陈醋,陈醋|醋,陈醋|山西,镇江|500ml*2瓶
粮油调味/调味品/盐|食用盐,海盐|盐|中盐,无碘|400g*5包
粮油调味/调味品/蚝油|蚝油|蚝油|海天,李锦记|700g
粮油调味/调味品/火锅底料|火锅底料|火锅底料,底料|海底捞,牛油,麻辣|500g
粮油调味/调味品/辣椒酱|辣椒酱,香辣酱|辣椒酱,老干妈|老干妈,贵州|280g*3瓶
粮油调味/调味品/白糖|白砂糖,冰糖|白糖,冰糖|太古|1kg
"""


def _parse_catalogue(text: str) -> tuple[Product, ...]:
    products = []
    for line in text.strip().splitlines():
        path, names, aliases, prefixes, specs = line.split("|")
        categories = tuple(path.split("/"))
        assert 3 <= len(categories) <= len(CATEGORY_KEYS), line
        products.append(
            Product(
                categories,
                tuple(names.split(",")),
                tuple(aliases.split(",")),
                () if prefixes == "-" else tuple(prefixes.split(",")),
                tuple(specs.split(",")),
            )
        )
    return tuple(products)


CATALOGUE: tuple[Product, ...] = _parse_catalogue(_CATALOGUE_TEXT)

# What people say about a product, by second-level (生鲜) or first-level category. They follow a
# product word in both classes, so only the product word tells which product a clause is about.
PHRASES: dict[str, tuple[str, ...]] = {
    "水果": (
        "很甜", "水分很足", "酸甜适中", "有点酸", "果肉很脆", "熟得刚好", "有几个坏了",
        "个头均匀", "有点小",
    ),
    "蔬菜": (
        "很嫩", "炒着吃很香", "有几个烂了", "叶子有点蔫", "很水灵", "个头均匀", "很干净",
    ),
    "肉禽蛋": (
        "肉质很嫩", "没有腥味", "炖着很香", "有点柴", "解冻后出水多", "很新鲜", "分割得很整齐",
    ),
    "海鲜水产": ("很鲜", "肉很弹", "到手还是活的", "有点腥", "个头挺大", "死了好几只"),
    "酒水饮料": (
        "口感不错", "很解渴", "有点太甜", "冰镇后很好喝", "瓶身有点瘪", "喝着很顺口", "日期很新",
    ),
    "休闲食品": (
        "很香很脆", "有点咸", "孩子很爱吃", "有点受潮", "越吃越香", "有几包漏气了", "不太甜",
    ),
    "乳品烘焙": ("奶香很浓", "口感顺滑", "有点太甜", "日期很新", "很松软", "有几盒胀包"),
    "个护清洁": ("很好用", "味道好闻", "很柔软", "用着很舒服", "味道有点冲", "用量很省"),
    "粮油调味": ("很香", "炒菜很香", "煮出来很香", "颜色很正", "有点咸", "包装很严实"),
}

OPENERS = (
    "第一次在这里买", "回购好几次了", "朋友推荐买的", "给家里老人买的", "活动价入手的",
    "一直在这个平台买", "看评价不错就下单了", "囤了一些", "帮同事带的", "给孩子买的",
    "这次买的", "双十一囤的货", "公司团购的", "一直在用这家", "家里老人让买的",
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
    "口感不错", "吃起来很香", "比超市的好", "品质一般", "特别甜", "个头很大", "有几个坏了",
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

# {k}: what the review calls the product, {p}: a phrase about it, {v}: a vague remark. The same
# templates serve the SKU's own product and other products, so wording gives no hint either.
MENTIONS = (
    "{k}{p}", "这次买的{k}{p}", "{k}收到了，{p}", "买的{k}{p}", "{k}{v}", "这个{k}{p}",
    "家里人都说{k}{p}", "{k}比上次买的好", "{k}{p}，{v}", "收到的{k}{p}", "{k}真的{p}",
    "顺便买的{k}{p}", "上次买的{k}{p}", "同时买的{k}{v}", "凑单的{k}{p}", "另外{k}{p}",
    "{k}{v}", "{k}{v}", "{k}{p}",
)


@dataclass(frozen=True)
class Sku:
    """A concrete SKU: a product sold under one name (brand or origin, name form, pack size)."""

    product: Product
    prefix: str
    name_form: str
    name: str


def _words(product: Product) -> tuple[str, ...]:
    return (*product.names, *product.aliases)


def _related(a: Product, b: Product) -> bool:
    """True when the two products are too close to count as 'another product' for each other."""
    if a.categories[:3] == b.categories[:3]:
        return True
    return any(wa in wb or wb in wa for wa in _words(a) for wb in _words(b))


# For each product, the products a negative review may talk about instead: anywhere in the
# catalogue, or in the same first-level category (harder: 苹果 vs 香蕉 for a banana SKU).
_OTHERS: dict[Product, tuple[Product, ...]] = {
    p: tuple(o for o in CATALOGUE if not _related(o, p)) for p in CATALOGUE
}
_NEAR_OTHERS: dict[Product, tuple[Product, ...]] = {
    p: tuple(o for o in _OTHERS[p] if o.categories[0] == p.categories[0]) or _OTHERS[p]
    for p in CATALOGUE
}


def _make_sku(rng: random.Random, product: Product) -> Sku:
    prefix = rng.choice(product.prefixes) if product.prefixes and rng.random() < 0.7 else ""
    name_form = rng.choice(product.names)
    name = prefix + name_form
    if rng.random() < 0.92:
        name += " " + rng.choice(product.specs)
    return Sku(product, prefix, name_form, name)


def _product_word(rng: random.Random, sku: Sku) -> str:
    """How a reviewer refers to the product: mostly a short alias, sometimes the SKU's words."""
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(sku.product.aliases)
    if roll < 0.75:
        return sku.name_form
    if roll < 0.85 and sku.prefix:
        return sku.prefix + rng.choice(("", "的")) + rng.choice(sku.product.aliases)
    return rng.choice(_words(sku.product))


def _mention(rng: random.Random, sku: Sku) -> str:
    categories = sku.product.categories
    phrases = PHRASES.get(categories[1]) or PHRASES[categories[0]]
    return rng.choice(MENTIONS).format(
        k=_product_word(rng, sku), p=rng.choice(phrases), v=rng.choice(VAGUE)
    )


def _other_sku(rng: random.Random, product: Product) -> Sku:
    others = _NEAR_OTHERS[product] if rng.random() < 0.5 else _OTHERS[product]
    return _make_sku(rng, rng.choice(others))


def _generic_clause(rng: random.Random) -> str:
    return rng.choice(rng.choice(GENERIC_TOPICS))


def _clause_count(rng: random.Random) -> int:
    # Mostly short reviews with a long tail, like real ones.
    return min(2 + int(rng.expovariate(1 / 3.5)), 24)


def _insert_mentions(rng: random.Random, clauses: list[str], sku: Sku) -> None:
    # The first mention sits near the start so it survives truncation to a few dozen tokens;
    # people often come back to the product later in the review.
    clauses.insert(rng.randint(0, min(2, len(clauses))), _mention(rng, sku))
    while rng.random() < 0.45:
        clauses.insert(rng.randint(1, len(clauses)), _mention(rng, sku))


def _insert_anywhere(rng: random.Random, clauses: list[str], clause: str) -> None:
    clauses.insert(rng.randint(1, len(clauses)), clause)


def _review(rng: random.Random, sku: Sku, label: int) -> str:
    clauses = [_generic_clause(rng) for _ in range(_clause_count(rng))]
    if label == 1:
        _insert_mentions(rng, clauses, sku)
        if rng.random() < 0.1:  # a comparison with another product does not flip the label
            _insert_anywhere(rng, clauses, _mention(rng, _other_sku(rng, sku.product)))
    elif rng.random() < 0.7:
        # Most negatives read exactly like a positive review of another product.
        _insert_mentions(rng, clauses, _other_sku(rng, sku.product))
        if rng.random() < 0.1:
            _insert_anywhere(rng, clauses, _mention(rng, _other_sku(rng, sku.product)))
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
        sku = _make_sku(rng, rng.choice(CATALOGUE))
        label = int(rng.random() < POSITIVE_RATE)
        record: dict[str, object] = {"dataType": DATA_TYPE, "baseSkuName": sku.name}
        record["reviewBody"] = _review(rng, sku, label)
        categories = sku.product.categories
        levels = categories + ("",) * (len(CATEGORY_KEYS) - len(categories))
        record.update(zip(CATEGORY_KEYS, levels, strict=True))
        record["label"] = label
        yield record
