"""Invented entities: names and fact values per family and language (no real people).

``names(family, lang)`` is a fixed, ordered pool of names; ``facts(family, lang, name, rng)``
draws one entity's values. Values are strings exactly as the passages print them, so a right
answer contains them. Dev and test families draw from separate pools.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import product

# -- name pools -------------------------------------------------------------------------------
_EN_FIRST_DEV = ["Aurelio", "Brisa", "Cadmus", "Delphine", "Emrys", "Fiora", "Gideon",
                 "Halvard", "Ione", "Jessamy", "Kalinda", "Leofric"]
_EN_LAST_DEV = ["Ardenfell", "Brackwater", "Caskmoor", "Dornwood", "Elsworthy", "Farrowmere",
                "Gallowen", "Harkwright", "Istermoor", "Jorvale"]
_EN_FIRST_TEST = ["Maelis", "Nerissa", "Osric", "Pell", "Quenby", "Rosalind", "Sorrel",
                  "Tamsin", "Ulric", "Verity", "Wystan", "Yseult"]
_EN_LAST_TEST = ["Kilbraith", "Lowenna", "Merriweather", "Nettlefold", "Ottery", "Pendragast",
                 "Quarrington", "Rookwell", "Saltonstall", "Thornbury"]
_ZH_SURNAME_DEV = ["欧阳", "司马", "诸葛", "上官", "宇文", "慕容", "令狐", "皇甫"]
_ZH_GIVEN_DEV = ["清源", "知微", "景行", "慕白", "若水", "怀瑾", "书瑶", "望舒", "听澜", "修远"]
_ZH_SURNAME_TEST = ["公孙", "东方", "端木", "长孙", "夏侯", "闻人", "澹台", "南宫"]
_ZH_GIVEN_TEST = ["明远", "星野", "砚秋", "见山", "临川", "采薇", "鹤鸣", "云舒", "映雪", "南枝"]


def _people(first: list[str], last: list[str]) -> list[str]:
    return [f"{a} {b}" for a, b in product(first, last)]


def _zh_people(surname: list[str], given: list[str]) -> list[str]:
    return [a + b for a, b in product(surname, given)]


def _combine(heads: list[str], tails: list[str], sep: str = " ") -> list[str]:
    return [f"{h}{sep}{t}" for h, t in product(heads, tails)]


_MODELS = ["Kelvora KX-20", "Thermix T5", "Aquon D12", "Brisko B300", "Calmera C8", "Dewlix DL-4",
           "Ferrant F9", "Humidra H2", "Nivalis N7", "Oberon O-11", "Prisma P40", "Quellon Q3",
           "Rhyme R8", "Stillwell S2"]
_MODELS_ZH = ["凯沃拉 KX-20", "热米 T5", "澄泉 D12", "微风 B300", "静语 C8", "露晞 DL-4",
              "飞朗 F9", "润湿 H2", "雪原 N7", "奥伯 O-11", "棱镜 P40", "清伦 Q3", "韵律 R8",
              "静泉 S2"]

_NAME_POOLS: dict[tuple[str, str], Callable[[], list[str]]] = {
    ("scientist_bio", "en"): lambda: _people(_EN_FIRST_DEV, _EN_LAST_DEV),
    ("scientist_bio", "zh"): lambda: _zh_people(_ZH_SURNAME_DEV, _ZH_GIVEN_DEV),
    ("household", "en"): lambda: _people(_EN_FIRST_TEST, _EN_LAST_TEST),
    ("household", "zh"): lambda: _zh_people(_ZH_SURNAME_TEST, _ZH_GIVEN_TEST),
    ("company", "en"): lambda: _combine(
        ["Brightwater", "Corvane", "Dunlowe", "Emberly", "Falkirra", "Glimmerton", "Hollowmere",
         "Ivarsen", "Juxbury", "Kestrova"], ["Systems", "Foods", "Logistics", "Textiles",
                                             "Robotics", "Analytics"]),
    ("company", "zh"): lambda: _combine(
        ["青岚", "翠谷", "铜叶", "星澜", "云栖", "墨川", "金穗", "银杉", "海珀", "松韵"],
        ["科技公司", "食品公司", "物流公司", "纺织公司", "机器人公司", "数据公司"], ""),
    ("gadget", "en"): lambda: _combine(
        ["Lumo", "Quibble", "Zephra", "Nimbus", "Torvik", "Pallas", "Orrery", "Vantix"],
        ["X2", "Mini", "Pro 7", "Go", "S10", "Air 3"]),
    ("gadget", "zh"): lambda: _combine(
        ["灵犀", "星梭", "云雀", "墨羽", "青鸾", "赤霄", "玄鸟", "鹿鸣"],
        ["X2", "Mini", "Pro 7", "S10", "Air 3", "青春版"], " "),
    ("town", "en"): lambda: [a + b for a, b in product(
        ["Ash", "Bram", "Cold", "Dun", "Elder", "Fen", "Gorse", "Holt", "Ivy", "Kings"],
        ["ford", "wick", "stead", "mouth", "bury", "thorpe"])],
    ("town", "zh"): lambda: [a + b for a, b in product(
        ["清溪", "枫林", "石桥", "云台", "柳岸", "鹤洲", "梅岭", "竹坞", "桃源", "雁门"],
        ["镇", "县", "乡"])],
    ("permit", "en"): lambda: [f"{h} Permit" for h in (
        "Harbour Mooring", "Street Trading", "Beehive Keeping", "Drone Flying", "River Angling",
        "Bonfire", "Market Stall", "Allotment", "Busking", "Well Drilling", "Sign Hanging",
        "Tree Felling", "Road Closure", "Night Fishing")],
    ("permit", "zh"): lambda: [f"{h}许可证" for h in (
        "港口泊位", "街头摆摊", "养蜂", "无人机飞行", "河道垂钓", "露天篝火", "集市摊位",
        "菜园租用", "街头表演", "打井", "悬挂招牌", "树木砍伐", "道路占用", "夜间垂钓")],
    # one kind of appliance per model, so no two entities share a model code
    ("appliance_manual", "en"): lambda: [
        f"{m} {('dehumidifier', 'air purifier', 'humidifier')[i % 3]}"
        for i, m in enumerate(_MODELS)],
    ("appliance_manual", "zh"): lambda: [f"{m} {('除湿机', '空气净化器', '加湿器')[i % 3]}"
                                         for i, m in enumerate(_MODELS_ZH)],
    ("ship", "en"): lambda: [f"the {a} {b}" for a, b in product(
        ["Silver", "Amber", "Northern", "Restless", "Quiet", "Crimson", "Patient", "Wandering"],
        ["Heron", "Lantern", "Otter", "Meridian", "Gannet", "Thistle"])],
    ("ship", "zh"): lambda: [f"“{a}{b}”号" for a, b in product(
        ["银", "琥珀", "北辰", "不息", "静海", "赤霞", "长风", "远游"],
        ["鹭", "灯塔", "水獭", "子午", "海燕", "蓟花"])],
    ("research_lab", "en"): lambda: _combine(
        ["Halloran", "Vesper", "Okonkwo-Reyes", "Marrowfield", "Tindall", "Quillfeather",
         "Aldous", "Brennock"], ["Laboratory", "Institute for Soil Studies",
                                 "Centre for Tidal Research", "Sensor Lab"]),
    ("research_lab", "zh"): lambda: _combine(
        ["衡山", "镜湖", "潮音", "稷下", "听涛", "观星", "揽月", "青藤"],
        ["实验室", "土壤研究所", "潮汐研究中心", "传感器实验室"], ""),
    ("software_library", "en"): lambda: [a + b for a, b in product(
        ["quill", "marrow", "tangle", "fjord", "pebble", "lattice", "wisp", "cobble"],
        ["db", "kit", "sync", "parse", "flow", "mesh"])],
    ("software_library", "zh"): lambda: [a + b for a, b in product(
        ["yunque", "moyu", "qingxi", "tingtao", "shanlan", "xinghe", "luming", "feiquan"],
        ["db", "kit", "sync", "parse", "flow", "mesh"])],
    ("landmark", "en"): lambda: _combine(
        ["Marlowe", "Ravensholm", "Corbel", "Wintermere", "Saltcombe", "Pellham", "Oriel",
         "Brackenridge"], ["Tower", "Lighthouse", "Concert Hall", "Clock Tower", "Library"]),
    ("landmark", "zh"): lambda: _combine(
        ["鸥尖", "鸦巢", "拱石", "冬湖", "盐谷", "佩兰", "凤阁", "蕨岭"],
        ["塔", "灯塔", "音乐厅", "钟楼", "图书馆"], ""),
    ("recipe", "en"): lambda: _combine(
        ["Moorland", "Harvest", "Lantern-night", "Fisherman's", "Orchard", "Midwinter",
         "Riverside", "Shepherd's"], ["pie", "loaf", "tart", "bake", "crumble"]),
    ("recipe", "zh"): lambda: _combine(
        ["山村", "丰收", "灯会", "渔家", "果园", "冬至", "河畔", "牧人"],
        ["馅饼", "面包", "蛋挞", "烤盘", "酥饼"], ""),
    ("cli_manual", "en"): lambda: [a + b for a, b in product(
        ["port", "net", "sock", "wire", "link", "hop"], ["wick", "tally", "scope", "warden",
                                                        "sift", "lark"])],
    ("cli_manual", "zh"): lambda: [a + b for a, b in product(
        ["duan", "wang", "tao", "xian", "lian", "tiao"], ["wick", "tally", "scope", "warden",
                                                         "sift", "lark"])],
    ("sports_club", "en"): lambda: _combine(
        ["Ashford", "Brightwick", "Calder Vale", "Dunmore", "Elmstead", "Fallowgate",
         "Greystone", "Hartsmoor"], ["Rovers", "Athletic", "Wanderers", "Harriers", "United"]),
    ("sports_club", "zh"): lambda: _combine(
        ["青川", "白鹭洲", "云岭", "赤水", "松江口", "雁荡", "石湖", "金沙"],
        ["流浪者队", "竞技队", "飞鹰队", "猛虎队", "联队"], ""),
}


def names(family: str, lang: str) -> list[str]:
    """The family's fixed pool of invented names in ``lang``."""
    try:
        return _NAME_POOLS[(family, lang)]()
    except KeyError:
        raise ValueError(f"no names for family {family!r} in {lang!r}") from None


# -- value pools ------------------------------------------------------------------------------
_EN_CITY = ["Port Avalen", "Thistlebury", "Mirecastle", "Oldharbour", "Wrenfield", "Duskmoor",
            "Valdoreña", "Kettleby", "Saint-Aubrac", "Ostmark"]
_ZH_CITY = ["大理", "泉州", "洛阳", "桂林", "喀什", "丽江", "扬州", "敦煌", "景德镇", "赣州"]
_EN_MONTH = ["January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December"]


def _en_date(rng: random.Random) -> str:
    return f"{rng.choice(_EN_MONTH)} {rng.randint(1, 28)}, {rng.randint(1948, 1996)}"


def _zh_date(rng: random.Random) -> str:
    return f"{rng.randint(1948, 1996)}年{rng.randint(1, 12)}月{rng.randint(1, 28)}日"


def _pick(rng: random.Random, en: list[str], zh: list[str], lang: str) -> str:
    return rng.choice(en if lang == "en" else zh)


# People who appear as values (a CEO, a mayor, a coach) come from their own pools, so they are
# never confused with the people the people-families are about.
_EN_ROLE_FIRST = {False: ["Anselm", "Bettany", "Crispin", "Dulcie", "Evander", "Fenella"],
                  True: ["Gwendolen", "Hartley", "Imogen", "Jolyon", "Kerensa", "Lucan"]}
_EN_ROLE_LAST = {False: ["Ashcombe", "Birtwhistle", "Cheverell", "Dimmock", "Eastlake"],
                 True: ["Fothergill", "Grimshaw", "Hetherington", "Inchbald", "Jellicoe"]}
_ZH_ROLE_SURNAME = {False: ["王", "李", "张", "刘", "陈"], True: ["杨", "赵", "黄", "周", "吴"]}
_ZH_ROLE_GIVEN = {False: ["建国", "丽华", "志强", "海燕", "文博", "静怡"],
                  True: ["子墨", "嘉懿", "思齐", "雨泽", "语桐", "梓萱"]}


def _person(rng: random.Random, lang: str, test: bool) -> str:
    if lang == "en":
        return f"{rng.choice(_EN_ROLE_FIRST[test])} {rng.choice(_EN_ROLE_LAST[test])}"
    return rng.choice(_ZH_ROLE_SURNAME[test]) + rng.choice(_ZH_ROLE_GIVEN[test])


def _scientist_bio(rng: random.Random, lang: str) -> dict[str, str]:
    c1 = _pick(rng, _EN_CITY, _ZH_CITY, lang)
    return {
        "birth_date": _en_date(rng) if lang == "en" else _zh_date(rng),
        "birth_city": c1,
        "university": _pick(rng, ["Harwick Technical University", "the University of Kettleby",
                                  "Mirecastle Polytechnic", "Saint-Aubrac College",
                                  "Ostmark Institute of Technology"],
                            ["岭南理工大学", "北川大学", "东湖师范学院", "西岭科技大学",
                             "南溪医学院"], lang),
        "subject": _pick(rng, ["marine biology", "medieval history", "quantum chemistry",
                               "urban planning", "glaciology", "linguistics", "soil science"],
                         ["海洋生物学", "中世纪史", "量子化学", "城市规划", "冰川学", "语言学",
                          "土壤学"], lang),
        "employer": _pick(rng, ["Halcyon Instruments", "Verdant Mills", "Copperleaf Press",
                                "the Duskmoor Observatory", "Bramble & Sons"],
                          ["青岚仪器公司", "翠谷纺织厂", "铜叶出版社", "北岸研究所", "星河天文台"],
                          lang),
    }


def _company(rng: random.Random, lang: str) -> dict[str, str]:
    return {
        "founded": str(rng.randint(1952, 2015)),
        "headquarters": _pick(rng, _EN_CITY, _ZH_CITY, lang),
        "ceo": _person(rng, lang, test=False),
        "staff": f"{rng.randint(2, 98) * 100 + rng.randint(1, 9) * 10:,}",
        "product": _pick(rng, ["industrial kilns", "frozen dumplings", "cargo drones",
                               "wool blankets", "warehouse robots", "weather dashboards"],
                         ["工业窑炉", "速冻水饺", "货运无人机", "羊毛毯", "仓储机器人", "气象看板"],
                         lang),
    }


def _gadget(rng: random.Random, lang: str) -> dict[str, str]:
    return {
        "maker": _pick(rng, ["Corvane Systems", "Ivarsen Robotics", "Emberly Analytics",
                             "Kestrova Foods"], ["星澜科技公司", "云栖数据公司", "墨川科技公司",
                                                 "金穗机器人公司"], lang),
        "weight": f"{rng.randint(9, 95) * 10} g" if lang == "en"
        else f"{rng.randint(9, 95) * 10}克",
        "battery_life": f"{rng.randint(6, 40)} hours" if lang == "en"
        else f"{rng.randint(6, 40)}小时",
        "price": f"${rng.randint(5, 60) * 10 - 1}" if lang == "en"
        else f"{rng.randint(5, 60) * 100 - 1}元",
        "release_year": str(rng.randint(2016, 2025)),
    }


def _town(rng: random.Random, lang: str) -> dict[str, str]:
    return {
        "population": f"{rng.randint(3, 95) * 1000 + rng.randint(1, 999):,}",
        "river": _pick(rng, ["the Wendle", "the Ousel", "the Brack", "the Silvermere",
                             "the Tamsey"], ["青衣江", "白沙河", "乌溪", "银湖河", "柳江"], lang),
        "mayor": _person(rng, lang, test=False),
        "twin_town": _pick(rng, _EN_CITY, _ZH_CITY, lang),
        "market_day": _pick(rng, ["Tuesday", "Wednesday", "Thursday", "Saturday"],
                            ["星期二", "星期三", "星期四", "星期六"], lang),
    }


def _permit(rng: random.Random, lang: str) -> dict[str, str]:
    return {
        "office": _pick(rng, ["the Harbour Office on Quay Street", "the Civic Centre, desk 4",
                              "the County Records Hall", "the Parks Department kiosk"],
                        ["码头街港务办公室", "市民中心4号窗口", "县档案大厅", "公园管理处服务亭"],
                        lang),
        "fee": f"£{rng.randint(2, 30) * 5}" if lang == "en" else f"{rng.randint(2, 30) * 10}元",
        "processing_days": (f"{rng.randint(3, 28)} working days" if lang == "en"
                            else f"{rng.randint(3, 28)}个工作日"),
        "form_code": (f"{rng.choice('ABCDFHKMPRT')}{rng.choice('ABCDFHKMPRT')}-"
                      f"{rng.randint(10, 99)}"),
        "document": _pick(rng, ["a utility bill", "a passport photo", "proof of insurance",
                                "a site plan"],
                          ["水电费账单", "护照照片", "保险证明", "场地平面图"], lang),
    }


def _appliance_manual(rng: random.Random, lang: str) -> dict[str, str]:
    months = rng.choice([2, 3, 4, 6, 9])
    return {
        "reset_seconds": f"{rng.randint(3, 15)} seconds" if lang == "en"
        else f"{rng.randint(3, 15)}秒",
        "filter_interval": f"every {months} months" if lang == "en" else f"每{months}个月",
        "tank_capacity": f"{rng.randint(15, 80) / 10} litres" if lang == "en"
        else f"{rng.randint(15, 80) / 10}升",
        "setup_network": f"{rng.choice(['KELV', 'THX', 'AQN', 'BRS', 'CLM'])}-SETUP-"
                         f"{rng.randint(100, 999)}",
        "noise_level": f"{rng.randint(22, 55)} dB",
    }


def _ship(rng: random.Random, lang: str) -> dict[str, str]:
    return {
        "shipyard": _pick(rng, ["Gallowen Yard", "the Brackwater Dockworks", "Ostmark Marine",
                                "Farrowmere Shipbuilders"], ["沧澜船厂", "北港造船厂", "东屿船坞",
                                                              "海门造船厂"], lang),
        "launched": str(rng.randint(1958, 2019)),
        "home_port": _pick(rng, _EN_CITY, _ZH_CITY, lang),
        "captain": _person(rng, lang, test=False),
        "tonnage": f"{rng.randint(4, 95) * 100 + rng.randint(1, 99):,} tonnes" if lang == "en"
        else f"{rng.randint(4, 95) * 100 + rng.randint(1, 99)}吨",
    }


def _household(rng: random.Random, lang: str) -> dict[str, str]:
    return {
        "dog_name": _pick(rng, ["Biscuit", "Juniper", "Pepper", "Mungo", "Tansy", "Barnaby"],
                          ["豆豆", "旺财", "小黑", "糯米", "可乐", "团子"], lang),
        "car_make": _pick(rng, ["Vellmar", "Halden", "Marquette", "Tovari", "Ellery"],
                          ["红旗", "比亚迪", "五菱", "长城", "吉利"], lang),
        "hobby": _pick(rng, ["beekeeping", "bell ringing", "bouldering", "bookbinding",
                             "birdwatching", "pottery"], ["养蜂", "书法", "攀岩", "篆刻", "观鸟",
                                                          "陶艺"], lang),
        "second_language": _pick(rng, ["Portuguese", "Icelandic", "Welsh", "Swahili", "Finnish"],
                                 ["葡萄牙语", "冰岛语", "威尔士语", "斯瓦希里语", "芬兰语"], lang),
        "hometown": _pick(rng, _EN_CITY, _ZH_CITY, lang),
    }


def _research_lab(rng: random.Random, lang: str) -> dict[str, str]:
    founder, director = _person(rng, lang, test=True), _person(rng, lang, test=True)
    while director == founder:
        director = _person(rng, lang, test=True)
    return {
        "founder": founder,
        "director": director,
        "funder": _pick(rng, ["the Pellham Trust", "the Ottery Foundation",
                              "the Northern Science Council", "Saltcombe University"],
                        ["佩兰基金会", "奥特里基金会", "北方科学理事会", "盐谷大学"], lang),
        "lab_city": _pick(rng, _EN_CITY, _ZH_CITY, lang),
        "focus": _pick(rng, ["coastal erosion", "seed banks", "peatland carbon", "sensor drift",
                             "tidal energy"], ["海岸侵蚀", "种子库", "泥炭地碳汇", "传感器漂移",
                                               "潮汐能"], lang),
    }


def _software_library(rng: random.Random, lang: str) -> dict[str, str]:
    return {
        "latest_version": f"{rng.randint(0, 9)}.{rng.randint(0, 19)}.{rng.randint(1, 9)}",
        "licence": rng.choice(["MIT", "Apache-2.0", "BSD-3-Clause", "MPL-2.0", "LGPL-3.0"]),
        "written_in": rng.choice(["Rust", "Go", "OCaml", "Zig", "Haskell", "Elixir"]),
        "maintainer": _person(rng, lang, test=True),
        "first_release": str(rng.randint(2009, 2022)),
    }


def _landmark(rng: random.Random, lang: str) -> dict[str, str]:
    return {
        "architect": _person(rng, lang, test=True),
        "height": f"{rng.randint(28, 240)} metres" if lang == "en"
        else f"{rng.randint(28, 240)}米",
        "completed": str(rng.randint(1880, 2012)),
        "material": _pick(rng, ["red sandstone", "weathering steel", "white granite",
                                "glazed brick", "larch timber"], ["红砂岩", "耐候钢", "白花岗岩",
                                                                  "琉璃砖", "落叶松木"], lang),
        "district": _pick(rng, ["the Old Quay district", "Northgate", "the Tannery Quarter",
                                "Millbank Heights"], ["老码头区", "北门区", "皮坊片区", "磨坊高地"],
                          lang),
    }


def _recipe(rng: random.Random, lang: str) -> dict[str, str]:
    bake = rng.randint(4, 13) * 5
    rest = rng.choice([5, 10, 15, 20])
    while rest == bake:
        rest = rng.choice([5, 10, 15, 20])
    return {
        "oven_temp": f"{rng.randint(16, 23) * 10} °C",
        "bake_time": f"{bake} minutes" if lang == "en" else f"{bake}分钟",
        "main_ingredient": _pick(rng, ["smoked haddock", "parsnips", "damsons", "rhubarb",
                                       "chestnut flour", "leeks"], ["熏鳕鱼", "欧防风", "西洋李",
                                                                    "大黄", "栗子粉", "大葱"],
                                 lang),
        "servings": str(rng.randint(2, 12)),
        "rest_time": f"{rest} minutes" if lang == "en" else f"{rest}分钟",
    }


def _cli_manual(rng: random.Random, lang: str, tool: str) -> dict[str, str]:
    verb = rng.choice(["ls", "list", "show", "scan"])
    return {
        "list_ports_cmd": f"{tool} {verb} --open",
        "config_path": f"/etc/{tool}/{rng.choice(['main', 'daemon', tool])}.toml",
        "default_port": str(rng.randint(2000, 9899)),
        "verbose_flag": rng.choice(["--trace", "-vv", "--chatty", "--debug-wire"]),
        "log_dir": f"/var/log/{tool}",
    }


def _sports_club(rng: random.Random, lang: str) -> dict[str, str]:
    return {
        "coach": _person(rng, lang, test=True),
        "stadium": _pick(rng, ["Kilbraith Park", "the Ottery Ground", "Nettlefold Arena",
                               "Rookwell Meadow"], ["鹤鸣体育场", "砚秋球场", "南枝竞技场",
                                                    "临川草坪"], lang),
        "club_founded": str(rng.randint(1878, 1990)),
        "league": _pick(rng, ["the Western Counties League", "the Coastal Premier Division",
                              "the Midland Shield"], ["西部联赛", "沿海超级联赛", "中部盾杯联赛"],
                        lang),
        "kit_colours": _pick(rng, ["green and gold", "claret and sky blue", "black and amber",
                                   "white and navy"], ["绿金", "酒红天蓝", "黑琥珀", "白藏青"],
                             lang),
    }


def facts(family: str, lang: str, name: str, rng: random.Random) -> dict[str, str]:
    """One entity's fact values (relation -> value as printed in passages)."""
    if family == "cli_manual":
        return _cli_manual(rng, lang, name)
    makers: dict[str, Callable[[random.Random, str], dict[str, str]]] = {
        "scientist_bio": _scientist_bio, "company": _company, "gadget": _gadget, "town": _town,
        "permit": _permit, "appliance_manual": _appliance_manual, "ship": _ship,
        "household": _household, "research_lab": _research_lab,
        "software_library": _software_library, "landmark": _landmark, "recipe": _recipe,
        "sports_club": _sports_club,
    }
    if family not in makers:
        raise ValueError(f"unknown family {family!r}")
    return makers[family](rng, lang)
