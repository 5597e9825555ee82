"""SynthCue's character table: toneless pinyin syllable -> three homophone characters.

Derived once (and checked by tests/data/test_synthcue.py) from the GB2312 level-1 characters
whose pypinyin reading is unique (no heteronyms), so `pypinyin.lazy_pinyin(text,
style=Style.NORMAL)` of any SynthCue text gives back its `pinyin`. Syllables with fewer than three
such characters, and `er`, `weng`, `yo` (finals SynthCue does not model), are left out: 295
syllables.
"""
from __future__ import annotations

_TABLE = (
    'ai:挨哎唉 an:鞍氨安 ao:敖熬翱 ba:笆八疤 bai:摆败拜 ban:斑班颁 bang:邦帮梆 bao:褒雹保 bei:杯碑悲 ben:苯本笨 beng:崩绷蹦 '
    'bi:逼鼻鄙 bian:鞭边编 biao:标彪表 bie:鳖憋别 bin:斌濒滨 bing:兵柄丙 bo:玻菠播 bu:捕补埠 cai:猜裁材 can:残惭惨 cang:苍舱仓 '
    'cao:操糙曹 cha:叉茶碴 chan:搀蝉馋 chang:昌猖场 chao:钞潮巢 che:扯撤掣 chen:臣辰尘 cheng:撑城成 chi:痴持迟 chong:充冲崇 '
    'chou:抽酬畴 chu:初出橱 chuan:川椽船 chuang:疮床闯 chui:吹炊锤 chun:春椿醇 ci:茨磁雌 cong:聪匆丛 cuan:蹿篡窜 cui:崔催脆 '
    'cun:村存寸 da:答瘩打 dai:傣戴带 dan:耽丹郸 dang:当挡党 dao:捣蹈倒 deng:蹬等瞪 di:低滴迪 dian:颠掂碘 diao:碉叼雕 '
    'die:爹谍叠 ding:叮钉顶 dong:东冬懂 dou:兜抖陡 du:督犊独 duan:端短锻 duo:多夺垛 e:峨鹅俄 fa:发罚筏 fan:藩帆翻 fang:坊芳肪 '
    'fei:菲非飞 fen:芬酚氛 feng:丰枫蜂 fu:夫敷肤 gai:该改钙 gan:杆竿肝 gang:冈刚钢 gao:篙高膏 ge:哥歌搁 geng:耕更庚 '
    'gong:工攻功 gou:钩勾沟 gu:辜菇咕 gua:刮瓜剐 guai:乖拐怪 guan:棺关官 gui:瑰规圭 guo:锅郭国 hai:孩海氦 han:酣憨邯 '
    'hao:壕嚎豪 he:荷禾何 hong:轰哄烘 hou:喉侯猴 hu:乎忽瑚 hua:花哗华 huan:欢环桓 huang:慌黄蝗 hui:灰挥辉 hun:昏婚魂 '
    'huo:伙火获 ji:击基箕 jia:嘉枷佳 jian:歼监坚 jiang:僵姜浆 jiao:椒礁交 jie:皆街阶 jin:巾斤金 jing:荆兢茎 jiu:揪究纠 '
    'ju:狙疽驹 juan:鹃娟倦 jue:攫抉倔 jun:菌钧军 kai:开凯慨 kan:刊勘坎 kang:康慷糠 kao:考拷烤 ke:柯磕颗 ken:肯啃恳 kong:空恐孔 '
    'kou:抠口扣 ku:哭窟酷 kua:夸垮胯 kuai:筷侩快 kuang:筐框矿 kui:盔岿窥 kuo:扩廓阔 la:垃拉喇 lai:莱来赖 lan:婪栏拦 '
    'lang:琅榔廊 lao:捞劳老 lei:雷镭蕾 li:梨犁黎 lian:联莲连 liang:粮凉梁 liao:疗燎寥 lie:裂烈劣 lin:琳林霖 ling:玲菱龄 '
    'liu:溜琉榴 long:龙聋咙 lou:楼娄搂 lu:卢颅庐 luan:峦挛孪 lun:抡轮伦 luo:萝螺罗 lv:驴吕铝 ma:妈麻玛 mai:买麦卖 man:瞒馒蛮 '
    'mang:盲忙莽 mao:茅锚毛 mei:玫枚梅 men:门闷们 meng:蒙檬锰 mi:眯醚迷 mian:棉绵冕 miao:苗瞄秒 min:民抿敏 ming:螟鸣铭 '
    'mo:摸摹蘑 mu:拇牡亩 na:拿钠纳 nai:氖奶奈 nao:挠脑恼 ni:妮霓尼 nian:碾撵念 nie:捏聂孽 ning:狞凝拧 niu:牛钮纽 nong:脓浓农 '
    'nu:奴努怒 nuo:挪懦糯 ou:欧鸥殴 pa:啪趴爬 pan:攀盘磐 pang:乓庞耪 pao:抛咆泡 pei:呸胚赔 peng:烹澎蓬 pi:砒霹批 pian:篇偏骗 '
    'piao:飘瓢票 pin:频贫品 ping:乒坪萍 po:坡泼颇 pu:铺仆圃 qi:欺妻七 qian:牵扦钎 qiang:枪呛羌 qiao:橇锹敲 qin:钦侵秦 '
    'qing:轻氢倾 qiu:秋丘邱 qu:趋曲躯 quan:颧权泉 que:瘸却鹊 ran:然燃染 rang:瓤壤嚷 ren:壬仁人 rong:茸蓉荣 ru:茹蠕儒 '
    'sai:腮鳃赛 san:三叁伞 sang:桑嗓丧 sao:搔骚扫 sha:砂杀纱 shan:珊山删 shang:墒伤商 shao:稍烧韶 she:奢赊摄 shen:砷申呻 '
    'sheng:生甥牲 shi:师狮湿 shou:收手首 shu:蔬枢梳 shuai:摔甩帅 shuang:霜双爽 shun:吮瞬顺 shuo:硕朔烁 si:嘶私丝 '
    'song:松耸怂 su:苏酥俗 suan:酸蒜算 sui:虽随绥 sun:孙损笋 suo:琐索锁 ta:獭挞蹋 tai:胎苔泰 tan:坍摊贪 tang:塘搪堂 tao:掏涛滔 '
    'teng:藤腾疼 ti:梯剔锑 tian:天添田 tiao:条迢眺 tie:贴铁帖 ting:厅烃廷 tong:通瞳同 tu:凸秃突 tui:推颓腿 tuo:托鸵驼 '
    'wan:豌弯湾 wang:网往旺 wei:威巍微 wen:蚊文闻 wo:蜗窝我 wu:巫呜钨 xi:西硒矽 xia:瞎匣霞 xian:锨先仙 xiang:相厢镶 '
    'xiao:萧霄销 xie:楔协携 xin:薪芯锌 xing:星腥猩 xiong:凶胸匈 xiu:修羞朽 xu:墟虚须 xuan:轩喧宣 xue:靴薛学 xun:勋熏循 '
    'ya:压鸦鸭 yan:阉淹盐 yang:殃鸯秧 yao:邀腰瑶 ye:椰爷冶 yi:一医铱 yin:茵荫因 ying:樱婴鹰 yong:拥佣臃 you:幽优悠 yu:迂淤盂 '
    'yuan:鸳渊冤 yue:曰跃岳 yun:耘云郧 zai:栽哉灾 zang:赃脏葬 zao:遭糟藻 ze:责则泽 zha:渣铡闸 zhai:摘斋窄 zhan:瞻毡盏 '
    'zhang:樟章彰 zhao:昭沼赵 zhe:遮哲蛰 zhen:珍斟真 zheng:蒸挣睁 zhi:芝蜘知 zhong:中忠钟 zhou:舟周州 zhu:珠株蛛 '
    'zhuan:专砖篆 zhuang:桩装妆 zhui:锥赘坠 zhuo:捉拙卓 zi:咨资姿 zong:鬃棕踪 zui:嘴醉罪 zuo:昨左佐'
)

SYLLABLE_CHARS: dict[str, str] = dict(row.split(":") for row in _TABLE.split())
