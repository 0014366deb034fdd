"""Word lists for the generated sample data (English with Chinese equivalents)."""

NAMES_EN = ["Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Jack", "Emma", "Leo", "Nora", "Ivan", "Sara",
            "Omar", "Lily", "Max", "Zoe", "Paul", "Ella", "Ryan", "Kate", "Hugo", "Ruby", "Adam", "Iris",
            "Noah", "Jane", "Eric", "Rosa", "Dan", "Amy", "Finn", "Tina", "Carl", "Vera", "Luke", "Hana"]
NAMES_ZH = ["小明", "小红", "小刚", "小丽", "小华", "小军", "小芳", "小强", "小雪", "小龙", "小梅", "小杰",
            "小宇", "小月", "小东", "小玲", "小伟", "小静", "小涛", "小燕", "小峰", "小萍", "小磊", "小娟",
            "阿明", "阿芳", "阿强", "阿丽", "老王", "老李", "老张", "老陈"]

# the names as the other language writes them (an answer in the wrong language keeps the people of the
# question): English names transliterated, Chinese names in pinyin
NAMES_EN_IN_ZH = {"Tom": "汤姆", "Anna": "安娜", "Ben": "本", "Lucy": "露西", "Sam": "萨姆", "Mia": "米娅",
                  "Jack": "杰克", "Emma": "艾玛", "Leo": "利奥", "Nora": "诺拉", "Ivan": "伊万", "Sara": "萨拉",
                  "Omar": "奥马尔", "Lily": "莉莉", "Max": "马克斯", "Zoe": "佐伊", "Paul": "保罗", "Ella": "埃拉",
                  "Ryan": "瑞安", "Kate": "凯特", "Hugo": "雨果", "Ruby": "鲁比", "Adam": "亚当", "Iris": "艾丽斯",
                  "Noah": "诺亚", "Jane": "简", "Eric": "埃里克", "Rosa": "罗莎", "Dan": "丹", "Amy": "艾米",
                  "Finn": "芬恩", "Tina": "蒂娜", "Carl": "卡尔", "Vera": "维拉", "Luke": "卢克", "Hana": "哈娜"}
NAMES_ZH_IN_EN = {"小明": "Xiaoming", "小红": "Xiaohong", "小刚": "Xiaogang", "小丽": "Xiaoli", "小华": "Xiaohua",
                  "小军": "Xiaojun", "小芳": "Xiaofang", "小强": "Xiaoqiang", "小雪": "Xiaoxue", "小龙": "Xiaolong",
                  "小梅": "Xiaomei", "小杰": "Xiaojie", "小宇": "Xiaoyu", "小月": "Xiaoyue", "小东": "Xiaodong",
                  "小玲": "Xiaoling", "小伟": "Xiaowei", "小静": "Xiaojing", "小涛": "Xiaotao", "小燕": "Xiaoyan",
                  "小峰": "Xiaofeng", "小萍": "Xiaoping", "小磊": "Xiaolei", "小娟": "Xiaojuan", "阿明": "Ah Ming",
                  "阿芳": "Ah Fang", "阿强": "Ah Qiang", "阿丽": "Ah Li", "老王": "Lao Wang", "老李": "Lao Li",
                  "老张": "Lao Zhang", "老陈": "Lao Chen"}

# (english singular, english plural, chinese noun, chinese measure word)
OBJECTS = [("apple", "apples", "苹果", "个"), ("book", "books", "书", "本"), ("pen", "pens", "笔", "支"),
           ("card", "cards", "卡片", "张"), ("ball", "balls", "球", "个"), ("cookie", "cookies", "饼干", "块"),
           ("stamp", "stamps", "邮票", "张"), ("flower", "flowers", "花", "朵"), ("shell", "shells", "贝壳", "个"),
           ("marble", "marbles", "弹珠", "颗"), ("candy", "candies", "糖", "颗"), ("toy car", "toy cars", "玩具车", "辆"),
           ("pencil", "pencils", "铅笔", "支"), ("balloon", "balloons", "气球", "个"), ("orange", "oranges", "橙子", "个"),
           ("egg", "eggs", "鸡蛋", "个"), ("sticker", "stickers", "贴纸", "张"), ("coin", "coins", "硬币", "枚")]

ADJ = [("red", "红色的"), ("blue", "蓝色的"), ("green", "绿色的"), ("yellow", "黄色的"), ("black", "黑色的"),
       ("white", "白色的"), ("big", "大"), ("small", "小"), ("old", "旧"), ("new", "新"), ("happy", "快乐的"),
       ("quiet", "安静的"), ("fast", "快速的"), ("slow", "缓慢的"), ("hot", "热的"), ("cold", "冷的"),
       ("beautiful", "美丽的"), ("clean", "干净的"), ("heavy", "重的"), ("soft", "柔软的")]
NOUN = [("cat", "猫"), ("dog", "狗"), ("bird", "鸟"), ("fish", "鱼"), ("house", "房子"), ("tree", "树"),
        ("car", "汽车"), ("river", "河"), ("mountain", "山"), ("flower", "花"), ("book", "书"), ("door", "门"),
        ("table", "桌子"), ("chair", "椅子"), ("city", "城市"), ("road", "路"), ("horse", "马"), ("apple", "苹果"),
        ("boat", "船"), ("garden", "花园"), ("window", "窗户"), ("cup", "杯子"), ("bag", "包"), ("shirt", "衬衫")]

# (country en, capital en, country zh, capital zh)
CAPITALS = [("France", "Paris", "法国", "巴黎"), ("Germany", "Berlin", "德国", "柏林"), ("Italy", "Rome", "意大利", "罗马"),
            ("Spain", "Madrid", "西班牙", "马德里"), ("Japan", "Tokyo", "日本", "东京"), ("China", "Beijing", "中国", "北京"),
            ("Egypt", "Cairo", "埃及", "开罗"), ("Russia", "Moscow", "俄罗斯", "莫斯科"), ("Canada", "Ottawa", "加拿大", "渥太华"),
            ("Australia", "Canberra", "澳大利亚", "堪培拉"), ("Brazil", "Brasilia", "巴西", "巴西利亚"),
            ("India", "New Delhi", "印度", "新德里"), ("Mexico", "Mexico City", "墨西哥", "墨西哥城"),
            ("Greece", "Athens", "希腊", "雅典"), ("Norway", "Oslo", "挪威", "奥斯陆"), ("Sweden", "Stockholm", "瑞典", "斯德哥尔摩"),
            ("Poland", "Warsaw", "波兰", "华沙"), ("Portugal", "Lisbon", "葡萄牙", "里斯本"), ("Kenya", "Nairobi", "肯尼亚", "内罗毕"),
            ("Thailand", "Bangkok", "泰国", "曼谷"), ("Vietnam", "Hanoi", "越南", "河内"), ("Turkey", "Ankara", "土耳其", "安卡拉"),
            ("Peru", "Lima", "秘鲁", "利马"), ("Chile", "Santiago", "智利", "圣地亚哥"), ("Austria", "Vienna", "奥地利", "维也纳"),
            ("Ireland", "Dublin", "爱尔兰", "都柏林"), ("Finland", "Helsinki", "芬兰", "赫尔辛基"), ("Cuba", "Havana", "古巴", "哈瓦那"),
            ("Iran", "Tehran", "伊朗", "德黑兰"), ("Argentina", "Buenos Aires", "阿根廷", "布宜诺斯艾利斯"),
            ("South Korea", "Seoul", "韩国", "首尔"), ("Denmark", "Copenhagen", "丹麦", "哥本哈根"),
            ("Hungary", "Budapest", "匈牙利", "布达佩斯"), ("Belgium", "Brussels", "比利时", "布鲁塞尔"),
            ("Nepal", "Kathmandu", "尼泊尔", "加德满都"), ("Mongolia", "Ulaanbaatar", "蒙古", "乌兰巴托")]

REVERSE_WORDS_EN = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "candle", "rocket", "garden",
                    "window", "pencil", "island", "forest", "button", "dragon", "mirror", "planet", "yellow",
                    "silver", "winter", "summer", "orange", "banana", "castle", "bridge", "jacket", "rabbit",
                    "coffee", "basket", "doctor", "market", "pepper", "school", "violin", "turtle"]
REVERSE_WORDS_ZH = ["苹果", "河流", "石头", "白云", "老虎", "钢琴", "柠檬", "蜡烛", "火箭", "花园", "窗户", "铅笔",
                    "海岛", "森林", "按钮", "龙", "镜子", "星球", "黄色", "银色", "冬天", "夏天", "橙子", "香蕉",
                    "城堡", "桥", "夹克", "兔子", "咖啡", "篮子", "医生", "市场", "辣椒", "学校", "小提琴", "乌龟"]

# sentiment: review fragments
THINGS_EN = ["food", "service", "movie", "story", "music", "hotel room", "staff", "book", "game", "phone",
             "camera", "coffee", "trip", "show", "lesson", "design", "price", "delivery"]
THINGS_ZH = ["饭菜", "服务", "电影", "故事", "音乐", "酒店房间", "员工", "书", "游戏", "手机", "相机", "咖啡",
             "旅行", "演出", "课程", "设计", "价格", "快递"]
POS_EN = ["wonderful", "excellent", "great", "delightful", "amazing", "fantastic", "lovely", "superb",
          "pleasant", "impressive", "brilliant", "charming"]
NEG_EN = ["terrible", "awful", "disappointing", "boring", "horrible", "poor", "dreadful", "annoying",
          "unpleasant", "useless", "mediocre", "frustrating"]
POS_ZH = ["很好", "非常棒", "令人满意", "很精彩", "特别好", "很出色", "让人惊喜", "很温馨", "很贴心", "很完美"]
NEG_ZH = ["很差", "非常糟糕", "令人失望", "很无聊", "特别差", "很难受", "让人生气", "很敷衍", "很混乱", "很失败"]

EVENTS = [("a birthday party", "生日聚会"), ("a picnic", "野餐"), ("a book club meeting", "读书会"),
          ("a dinner", "晚餐"), ("a concert", "音乐会"), ("a football match", "足球比赛"),
          ("a movie night", "电影之夜"), ("a garden party", "花园聚会"), ("a chess game", "象棋比赛"),
          ("a cooking class", "烹饪课"), ("a charity run", "慈善跑"), ("a wedding rehearsal", "婚礼彩排"),
          ("a science fair", "科学展"), ("a farewell lunch", "送别午餐")]
DAYS = [("Monday", "星期一"), ("Tuesday", "星期二"), ("Wednesday", "星期三"), ("Thursday", "星期四"),
        ("Friday", "星期五"), ("Saturday", "星期六"), ("Sunday", "星期日")]
PLACES = [("the park", "公园"), ("my house", "我家"), ("the library", "图书馆"), ("the cafe", "咖啡馆"),
          ("the beach", "海边"), ("the school hall", "学校礼堂"), ("the old theater", "老剧院"),
          ("the community center", "社区中心"), ("the riverside", "河边"), ("the museum", "博物馆"),
          ("the stadium", "体育场"), ("the hotel lobby", "酒店大堂")]
TIMES = [("9 am", "上午九点"), ("10 am", "上午十点"), ("noon", "中午十二点"), ("2 pm", "下午两点"),
         ("3 pm", "下午三点"), ("5 pm", "下午五点"), ("6 pm", "晚上六点"), ("7 pm", "晚上七点"), ("8 pm", "晚上八点")]
